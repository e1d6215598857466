//! Human names for partition type identifiers.
//!
//! GPT type GUIDs follow the UEFI specification 2.10, section 5.3.3 (table 5-7) and the
//! Discoverable Partitions Specification (Linux types); MBR type bytes follow the de-facto list
//! kept by util-linux `fdisk` (`libfdisk/src/pt-mbr-partnames.h`). Names are short, lowercase
//! and hyphenated so that they can be matched in reports.

/// GPT partition type GUIDs (lowercase, hyphenated) and their names.
const GPT_TYPES: &[(&str, &str)] = &[
    ("c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "efi-system"),
    (
        "024dee41-33e7-11d3-9d69-0008c781f39f",
        "mbr-partition-scheme",
    ),
    ("21686148-6449-6e6f-744e-656564454649", "bios-boot"),
    ("d3bfe2de-3daf-11df-ba40-e3a556d89593", "intel-fast-flash"),
    ("0fc63daf-8483-4772-8e79-3d69d8477de4", "linux-data"),
    ("0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "linux-swap"),
    ("e6d6d379-f507-44c2-a23c-238f2a3df928", "linux-lvm"),
    ("a19d880f-05fc-4d3b-a006-743f0f84911e", "linux-raid"),
    ("933ac7e1-2eb4-4f13-b844-0e14e2aef915", "linux-home"),
    ("3b8f8425-20e0-4f3b-907f-1a25a76f98e8", "linux-srv"),
    (
        "bc13c2ff-59e6-4262-a352-b275fd6f7172",
        "linux-extended-boot",
    ),
    ("4d21b016-b534-45c2-a9fb-5c16e091fd2d", "linux-var"),
    ("7ec6f557-3bc5-4aca-b293-16ef5df639d1", "linux-var-tmp"),
    ("773f91ef-66d4-49b5-bd83-d683bf40ad16", "linux-user-home"),
    ("ca7d7ccb-63ed-4c53-861c-1742536059cc", "linux-luks"),
    ("7ffec5c9-2d00-49b7-8941-3ea10a5586b7", "linux-dm-crypt"),
    ("44479540-f297-41b2-9af7-d131d5f0458a", "linux-root-x86"),
    ("4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "linux-root-x86-64"),
    ("69dad710-2ce4-4e3c-b16c-21a1d49abed3", "linux-root-arm"),
    ("b921b045-1df0-41c3-af44-4c6f280d3fae", "linux-root-arm64"),
    ("8484680c-9521-48c6-9c11-b0720656f69e", "linux-usr-x86-64"),
    ("b0e01050-ee5f-4390-949a-9101b17104e9", "linux-usr-arm64"),
    (
        "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7",
        "microsoft-basic-data",
    ),
    ("e3c9e316-0b5c-4db8-817d-f92df00215ae", "microsoft-reserved"),
    ("de94bba4-06d1-4d40-a16a-bfd50179d6ac", "windows-recovery"),
    (
        "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3",
        "microsoft-ldm-metadata",
    ),
    ("af9b60a0-1431-4f62-bc68-3311714a69ad", "microsoft-ldm-data"),
    (
        "e75caf8f-f680-4cee-afa3-b001e56efc2d",
        "microsoft-storage-spaces",
    ),
    (
        "558d43c5-a1ac-43c0-aac8-d1472b2923d1",
        "microsoft-storage-replica",
    ),
    ("48465300-0000-11aa-aa11-00306543ecac", "apple-hfs"),
    ("7c3457ef-0000-11aa-aa11-00306543ecac", "apple-apfs"),
    ("426f6f74-0000-11aa-aa11-00306543ecac", "apple-boot"),
    ("516e7cb4-6ecf-11d6-8ff8-00022d09712b", "freebsd-data"),
    ("83bd6b9d-7f41-11dc-be0b-001560b84f0f", "freebsd-boot"),
    ("516e7cb5-6ecf-11d6-8ff8-00022d09712b", "freebsd-swap"),
    ("516e7cb6-6ecf-11d6-8ff8-00022d09712b", "freebsd-ufs"),
    ("516e7cba-6ecf-11d6-8ff8-00022d09712b", "freebsd-zfs"),
    ("6a898cc3-1dd2-11b2-99a6-080020736631", "zfs"),
    ("aa31e02a-400f-11db-9590-000c2911d1b8", "vmware-vmfs"),
    ("9d275380-40ad-11db-bf97-000c2911d1b8", "vmware-vmkcore"),
    ("3de21764-95bd-54bd-a5c3-4abe786f38a8", "u-boot-env"),
];

/// MBR partition type bytes and their names.
const MBR_TYPES: &[(u8, &str)] = &[
    (0x01, "fat12"),
    (0x04, "fat16-small"),
    (0x05, "extended"),
    (0x06, "fat16"),
    (0x07, "ntfs/exfat"),
    (0x0b, "fat32"),
    (0x0c, "fat32-lba"),
    (0x0e, "fat16-lba"),
    (0x0f, "extended-lba"),
    (0x11, "hidden-fat12"),
    (0x12, "compaq-diagnostics"),
    (0x14, "hidden-fat16-small"),
    (0x16, "hidden-fat16"),
    (0x17, "hidden-ntfs/exfat"),
    (0x1b, "hidden-fat32"),
    (0x1c, "hidden-fat32-lba"),
    (0x1e, "hidden-fat16-lba"),
    (0x27, "windows-recovery"),
    (0x42, "windows-dynamic"),
    (0x82, "linux-swap"),
    (0x83, "linux"),
    (0x85, "linux-extended"),
    (0x8e, "linux-lvm"),
    (0xa5, "freebsd"),
    (0xa6, "openbsd"),
    (0xa9, "netbsd"),
    (0xaf, "apple-hfs"),
    (0xbf, "solaris"),
    (0xde, "dell-utility"),
    (0xee, "gpt-protective"),
    (0xef, "efi-system"),
    (0xfb, "vmware-vmfs"),
    (0xfc, "vmware-vmkcore"),
    (0xfd, "linux-raid"),
];

/// The name of a GPT partition type GUID (lowercase, hyphenated), if known.
pub fn gpt_type_name(guid: &str) -> Option<&'static str> {
    GPT_TYPES
        .iter()
        .find(|(g, _)| *g == guid)
        .map(|(_, name)| *name)
}

/// The name of an MBR partition type byte, if known.
pub fn mbr_type_name(id: u8) -> Option<&'static str> {
    MBR_TYPES
        .iter()
        .find(|(t, _)| *t == id)
        .map(|(_, name)| *name)
}

/// Whether an MBR type byte marks an extended partition (a container of EBR-linked logical
/// partitions): DOS `0x05`, Windows LBA `0x0f` and Linux `0x85`.
pub fn is_mbr_extended(id: u8) -> bool {
    matches!(id, 0x05 | 0x0f | 0x85)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_and_tables_are_lowercase_and_unique() {
        assert_eq!(
            gpt_type_name("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
            Some("efi-system")
        );
        assert_eq!(mbr_type_name(0x83), Some("linux"));
        assert_eq!(mbr_type_name(0x00), None);
        let mut seen = std::collections::HashSet::new();
        for (g, _) in GPT_TYPES {
            assert_eq!(*g, g.to_lowercase());
            assert_eq!(g.len(), 36);
            assert!(seen.insert(*g), "duplicate {g}");
        }
        let mut seen = std::collections::HashSet::new();
        for (t, _) in MBR_TYPES {
            assert!(seen.insert(*t), "duplicate {t:#x}");
        }
    }
}

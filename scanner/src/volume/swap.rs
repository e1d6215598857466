//! Linux swap areas: the `SWAPSPACE2` signature in the last 10 bytes of the first page and the
//! version-1 header at byte 1024 (UUID, label), as in the kernel's `include/linux/swap.h`
//! (`union swap_header`).

use crate::block::BlockSource;
use crate::error::Result;

/// Page sizes whose swap signature is looked for.
pub const PAGE_SIZES: [u64; 4] = [4096, 8192, 16384, 65536];

/// A recognised swap area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapArea {
    /// Page size the area was made for.
    pub page_size: u64,
    /// UUID (version-1 header), if set.
    pub uuid: Option<String>,
    /// Label, if set.
    pub label: Option<String>,
}

/// Recognises a swap area on `dev`.
pub fn probe(dev: &dyn BlockSource) -> Result<Option<SwapArea>> {
    for page in PAGE_SIZES {
        if dev.size() < page {
            break;
        }
        let mut sig = [0u8; 10];
        dev.read_exact_at(page - 10, &mut sig)?;
        if &sig != b"SWAPSPACE2" && &sig != b"SWAP-SPACE" {
            continue;
        }
        let mut h = [0u8; 44];
        dev.read_exact_at(1024, &mut h)?;
        let uuid_bytes = &h[12..28];
        let uuid = (uuid_bytes.iter().any(|&b| b != 0)).then(|| {
            let x = hex::encode(uuid_bytes);
            format!(
                "{}-{}-{}-{}-{}",
                &x[..8],
                &x[8..12],
                &x[12..16],
                &x[16..20],
                &x[20..]
            )
        });
        let name = &h[28..44];
        let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
        let label = String::from_utf8_lossy(&name[..end]).to_string();
        return Ok(Some(SwapArea {
            page_size: page,
            uuid,
            label: (!label.is_empty()).then_some(label),
        }));
    }
    Ok(None)
}

//! Replaying committed transactions (`xlog_recover_commit_trans` and the item types' pass-1 and
//! pass-2 handlers, fs/xfs/xfs_log_recover.c): pass 1 collects cancelled buffers, pass 2
//! applies every item of every committed transaction in log order, with the kernel's ordering
//! inside a transaction (buffers and inode-chunk creations, then inodes and other items, then
//! inode unlinked-list buffers, then cancellations).

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};

use super::buffer::{blf, BufFormat};
use super::overlay::LogOverlay;
use super::record::{Endian, Item, Transaction};
use crate::fs::xfs::superblock::Superblock;

/// Log item types (`XFS_LI_*`).
pub mod li {
    /// Extent free intent / done.
    pub const EFI: u16 = 0x1236;
    /// Extent free done.
    pub const EFD: u16 = 0x1237;
    /// Inode.
    pub const INODE: u16 = 0x123b;
    /// Buffer.
    pub const BUF: u16 = 0x123c;
    /// Quota record.
    pub const DQUOT: u16 = 0x123d;
    /// Quota off.
    pub const QUOTAOFF: u16 = 0x123e;
    /// Inode chunk creation.
    pub const ICREATE: u16 = 0x123f;
    /// First and last intent/done type (rmap, refcount, bmap, attr, exchange, realtime).
    pub const RUI: u16 = 0x1240;
    /// Last intent/done type known.
    pub const LAST_INTENT: u16 = 0x124f;
    /// Bmap update intent: changes which blocks a file maps.
    pub const BUI: u16 = 0x1244;
    /// File mapping exchange intent.
    pub const XMI: u16 = 0x1248;
}

/// Counts of what the replay did.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Committed transactions replayed.
    pub transactions: u64,
    /// Buffer items applied.
    pub buffers: u64,
    /// Inode items applied.
    pub inodes: u64,
    /// Inode chunks initialised.
    pub icreates: u64,
    /// Items skipped because their buffer was cancelled (freed) later.
    pub cancelled: u64,
    /// Items skipped because the disk already holds a newer version.
    pub skipped_newer: u64,
    /// Quota items (quota is not read).
    pub dquots: u64,
}

/// Buffers cancelled in the log, with how many cancellations are still ahead
/// (`xlog_add_buffer_cancelled` / `xlog_put_buffer_cancelled`).
#[derive(Debug, Default)]
pub struct Cancels {
    table: HashMap<(u64, u64), u32>,
}

impl Cancels {
    /// Pass 1: one more cancellation of `(blkno, len)`.
    pub fn add(&mut self, blkno: u64, len: u64) {
        *self.table.entry((blkno, len)).or_default() += 1;
    }
    /// Pass 2: a cancellation item is passed; later copies of the buffer replay again once
    /// every cancellation has been passed.
    pub fn put(&mut self, blkno: u64, len: u64) {
        if let Some(n) = self.table.get_mut(&(blkno, len)) {
            *n -= 1;
            if *n == 0 {
                self.table.remove(&(blkno, len));
            }
        }
    }
    /// True while a cancellation of this buffer lies ahead.
    pub fn is_cancelled(&self, blkno: u64, len: u64) -> bool {
        self.table.contains_key(&(blkno, len))
    }
}

/// The state of a replay.
#[derive(Debug)]
pub struct Replayer<'a> {
    /// The superblock as read before replay (geometry).
    pub sb: &'a Superblock,
    /// The replayed view.
    pub overlay: LogOverlay,
    /// Cancelled buffers.
    pub cancels: Cancels,
    /// Counters.
    pub stats: Stats,
    /// Things worth telling the user.
    pub notes: Vec<String>,
    /// Volume name for errors.
    pub name: String,
    /// The UUID stamped in v5 metadata (`sb_meta_uuid`).
    pub meta_uuid: [u8; 16],
    /// The superblock has a separate metadata UUID.
    pub has_meta_uuid: bool,
    /// Filesystem blocks per inode cluster buffer.
    pub blocks_per_cluster: u32,
    /// Intents logged and not yet done: `(type, id)`.
    intents: HashSet<(u16, u64)>,
}

/// Where an item goes in the kernel's per-transaction order.
fn order(item: &Item, e: Endian) -> u8 {
    let r = &item.regions[0];
    match e.u16(r, 0) {
        Some(li::BUF) => match BufFormat::parse(r, e) {
            Ok(f) if f.flags & blf::CANCEL != 0 => 3,
            Ok(f) if f.flags & blf::INODE_BUF != 0 => 2,
            _ => 0,
        },
        Some(li::ICREATE) => 0,
        _ => 1,
    }
}

impl<'a> Replayer<'a> {
    /// A replay over `overlay` for the filesystem described by `sb`.
    pub fn new(sb: &'a Superblock, overlay: LogOverlay, meta_uuid: [u8; 16]) -> Self {
        let has_meta_uuid = sb.incompat & crate::fs::xfs::superblock::incompat::META_UUID != 0;
        // `xfs_icluster_size_fsb`: 8 KiB clusters, scaled with the inode size on v5.
        let mut cluster = 8192u32;
        if sb.has_crc() {
            let scaled = cluster * (u32::from(sb.inode_size) / 256);
            if sb.inode_align >= scaled / sb.block_size {
                cluster = scaled;
            }
        }
        let blocks_per_cluster = (cluster / sb.block_size).max(1);
        Replayer {
            sb,
            name: overlay_name(&overlay),
            overlay,
            cancels: Cancels::default(),
            stats: Stats::default(),
            notes: Vec::new(),
            meta_uuid,
            has_meta_uuid,
            blocks_per_cluster,
            intents: HashSet::new(),
        }
    }

    /// Pass 1 over a committed transaction: record its buffer cancellations.
    pub fn pass1(&mut self, t: &Transaction) {
        let e = t.endian.unwrap_or(Endian::Little);
        for item in t.items.iter().filter(|i| !i.regions.is_empty()) {
            let r = &item.regions[0];
            if e.u16(r, 0) == Some(li::BUF) {
                if let Ok(f) = BufFormat::parse(r, e) {
                    if f.flags & blf::CANCEL != 0 {
                        self.cancels.add(f.blkno, f.len);
                    }
                }
            }
        }
    }

    /// Pass 2: applies a committed transaction.
    pub fn pass2(&mut self, t: &Transaction) -> Result<()> {
        let e = t.endian.unwrap_or(Endian::Little);
        let mut items: Vec<&Item> = Vec::with_capacity(t.items.len());
        for item in &t.items {
            if item.regions.is_empty() {
                continue;
            }
            if item.regions.len() != item.total {
                return Err(Error::corrupt(
                    &self.name,
                    t.offset,
                    format!(
                        "log item has {} of its {} regions",
                        item.regions.len(),
                        item.total
                    ),
                ));
            }
            items.push(item);
        }
        items.sort_by_key(|i| order(i, e)); // stable: log order within each group
        for item in items {
            let r = &item.regions;
            let ty = e.u16(&r[0], 0).unwrap_or(0);
            match ty {
                li::BUF => self.buffer(r, e, t.lsn, t.offset)?,
                li::INODE => self.inode(r, e, t.lsn, t.offset)?,
                li::ICREATE => self.icreate(r, t.offset)?,
                li::DQUOT | li::QUOTAOFF => self.stats.dquots += 1,
                li::EFI | li::EFD | li::RUI..=li::LAST_INTENT => {
                    let id = e.u64(&r[0], 8).unwrap_or(0);
                    // Intents have even type numbers, their done items the next odd one.
                    if ty % 2 == 0 {
                        self.intents.insert((ty, id));
                    } else {
                        self.intents.remove(&(ty - 1, id));
                    }
                }
                _ => {
                    return Err(Error::corrupt(
                        &self.name,
                        t.offset,
                        format!("unknown log item type {ty:#x}"),
                    ))
                }
            }
        }
        self.stats.transactions += 1;
        Ok(())
    }

    /// Notes about intents the kernel would finish after recovery and this reader does not.
    pub fn intent_notes(&mut self) {
        let mapping = self
            .intents
            .iter()
            .filter(|(t, _)| *t == li::BUI || *t == li::XMI)
            .count();
        if mapping > 0 {
            self.notes.push(format!(
                "{mapping} unfinished file-mapping update(s) (bmap or exchange intents) in the log are not applied: files they change may read as before the change"
            ));
        }
        let other = self.intents.len() - mapping;
        if other > 0 {
            self.notes.push(format!(
                "{other} unfinished space-management intent(s) (free-extent, reverse-map, refcount, attribute) are not applied; they do not change file contents"
            ));
        }
    }
}

fn overlay_name(o: &LogOverlay) -> String {
    use crate::block::BlockSource;
    o.name().to_string()
}

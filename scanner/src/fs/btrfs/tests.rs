//! Unit tests over small images made by `mkfs.btrfs --rootdir` (skipped where the tool is
//! missing; the end-to-end suite in `tests/` builds the full fixtures).

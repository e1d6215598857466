//! Which logical volumes of a VG can be read: every segment maps to present PVs or to LVs that
//! are readable in turn, without a cycle; mirrored segments read their first readable image.

use std::sync::Arc;

use super::{missing, MappedSegment, Mapping, Place, VgMap, MAX_LV_NESTING};
use crate::error::Error;

#[derive(Debug, Clone)]
enum Check {
    Unvisited,
    InProgress,
    Done(std::result::Result<(), Arc<Error>>),
}

/// Decides which LVs can be read: mapping valid, PVs present, the LVs they stack on readable
/// without a cycle; and which image each mirrored segment reads (the first readable one).
struct Resolver<'a> {
    map: &'a VgMap,
    state: Vec<Check>,
    /// (LV, segment, image) choices for mirrored segments.
    choices: Vec<(usize, usize, usize)>,
}

impl Resolver<'_> {
    fn check(&mut self, lv: usize, depth: usize) -> std::result::Result<(), Arc<Error>> {
        let map = self.map;
        let object = || format!("{}/{}", map.name, map.lvs[lv].name);
        match &self.state[lv] {
            Check::Done(r) => return r.clone(),
            Check::InProgress => {
                return Err(Arc::new(Error::corrupt(
                    object(),
                    0,
                    "logical volumes refer to each other in a loop",
                )))
            }
            Check::Unvisited => {}
        }
        if depth > MAX_LV_NESTING {
            return Err(Arc::new(Error::limit(
                object(),
                format!("logical volumes nested deeper than {MAX_LV_NESTING}"),
            )));
        }
        self.state[lv] = Check::InProgress;
        let mut result = Ok(());
        for (si, seg) in map.lvs[lv].segments.iter().enumerate() {
            let r = match &seg.mapping {
                Mapping::Zero => Ok(()),
                Mapping::Pool { meta, data } => [*meta, *data]
                    .into_iter()
                    .try_for_each(|sub| self.check(sub, depth + 1)),
                Mapping::Thin { pool, .. } => {
                    let pool = *pool;
                    let is_pool = map.lvs[pool]
                        .segments
                        .iter()
                        .all(|s| matches!(s.mapping, Mapping::Pool { .. }));
                    if is_pool && !map.lvs[pool].segments.is_empty() {
                        self.check(pool, depth + 1)
                    } else {
                        Err(Arc::new(Error::corrupt(
                            object(),
                            seg.start,
                            format!(
                                "thin volume's pool {} is not a thin pool",
                                map.lvs[pool].name
                            ),
                        )))
                    }
                }
                Mapping::Snapshot { origin, cow } => {
                    let (origin, cow) = (*origin, *cow);
                    self.check(origin, depth + 1)
                        .and_then(|()| self.check(cow, depth + 1))
                        .and_then(|()| {
                            let (o, s) = (map.lvs[origin].extents, map.lvs[lv].extents);
                            if o == s {
                                Ok(())
                            } else {
                                Err(Arc::new(Error::corrupt(
                                    object(),
                                    seg.start,
                                    format!(
                                        "snapshot of {s} extents, but its origin {} has {o}",
                                        map.lvs[origin].name
                                    ),
                                )))
                            }
                        })
                }
                Mapping::Striped { areas, .. } => areas
                    .iter()
                    .try_for_each(|p| self.check_place(lv, *p, seg, depth)),
                Mapping::Mirror { images, .. } => {
                    let mut first_err = None;
                    let mut chosen = None;
                    for (ii, p) in images.iter().enumerate() {
                        match self.check_place(lv, *p, seg, depth) {
                            Ok(()) => {
                                chosen = Some(ii);
                                break;
                            }
                            Err(e) => {
                                first_err.get_or_insert(e);
                            }
                        }
                    }
                    match (chosen, first_err) {
                        (Some(ii), _) => {
                            self.choices.push((lv, si, ii));
                            Ok(())
                        }
                        (None, Some(e)) => Err(e),
                        (None, None) => Err(Arc::new(Error::corrupt(
                            object(),
                            seg.start,
                            "mirrored segment without images",
                        ))),
                    }
                }
            };
            if let Err(e) = r {
                result = Err(e);
                break;
            }
        }
        self.state[lv] = Check::Done(result.clone());
        result
    }

    fn check_place(
        &mut self,
        lv: usize,
        place: Place,
        seg: &MappedSegment,
        depth: usize,
    ) -> std::result::Result<(), Arc<Error>> {
        let map = self.map;
        match place {
            Place::Pv { slot, .. } => match &map.pvs[slot].source {
                Some(_) => Ok(()),
                None => Err(Arc::new(missing(
                    &format!("{}/{}", map.name, map.lvs[lv].name),
                    &map.pvs[slot],
                ))),
            },
            Place::Lv {
                lv: sub,
                start_extent,
            } => {
                self.check(sub, depth + 1)?;
                let area_ext = seg.area_bytes / map.extent_bytes;
                if start_extent.saturating_add(area_ext) > map.lvs[sub].extents {
                    return Err(Arc::new(Error::corrupt(
                        format!("{}/{}", map.name, map.lvs[lv].name),
                        seg.start,
                        format!("segment maps past the end of {}", map.lvs[sub].name),
                    )));
                }
                Ok(())
            }
        }
    }
}

/// Resolves every LV of `map` (given the mapping errors found while building it), fixes the
/// image each mirrored segment reads, and returns each LV's readability.
pub(super) fn resolve(
    mut map: VgMap,
    errors: Vec<Option<Error>>,
) -> (Arc<VgMap>, Vec<std::result::Result<(), Arc<Error>>>) {
    let state = errors
        .into_iter()
        .map(|e| match e {
            Some(e) => Check::Done(Err(Arc::new(e))),
            None => Check::Unvisited,
        })
        .collect();
    let mut r = Resolver {
        map: &map,
        state,
        choices: Vec::new(),
    };
    let results: Vec<_> = (0..map.lvs.len()).map(|lv| r.check(lv, 0)).collect();
    let choices = std::mem::take(&mut r.choices);
    for (lv, si, ii) in choices {
        if let Some(Mapping::Mirror { chosen, .. }) = map
            .lvs
            .get_mut(lv)
            .and_then(|l| l.segments.get_mut(si))
            .map(|s| &mut s.mapping)
        {
            *chosen = ii;
        }
    }
    (Arc::new(map), results)
}

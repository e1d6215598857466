//! The overlay keeper of the snapshot fallback: every disk-only snapshot handed over when its
//! VM job ended (or when the manager that took it died) is committed back into its images
//! ([`thaw`]: `blockcommit --active --pivot`, overlay removed). A try that cannot finish (the VM
//! is shut off and defined on its overlay, the commit did not get ready in time, libvirt did not
//! answer) is logged on the VM job with its reason and tried again later, with a growing pause;
//! nothing is forgotten across restarts: the snapshot stays recorded until it is settled.

use std::time::Duration;

use crate::libvirt::{blocking, thaw, SnapshotPlan, Thawed};
use crate::store::overlays::OverlayRow;
use crate::store::vms::VmJobRow;
use crate::store::{Store, StoreResult};

use super::Connections;

/// Snapshots looked at per tick.
const OVERLAYS_PER_TICK: i64 = 50;
/// How long one disk's commit may take to get ready before it is cancelled and tried later.
const COMMIT_LIMIT: Duration = Duration::from_secs(600);
/// First pause after a failed try; doubled each time up to [`MAX_PAUSE`].
const FIRST_PAUSE: i64 = 30;
/// Longest pause between tries.
const MAX_PAUSE: i64 = 3600;

/// The record that hands the snapshot `plan` of `job` (taken through `uri`) to the keeper.
pub fn overlay_row(job: &VmJobRow, uri: &str, plan: &SnapshotPlan, now: i64) -> OverlayRow {
    OverlayRow {
        tag: plan.tag.clone(),
        vm_job: job.id,
        hypervisor: job.hypervisor.clone(),
        uri: uri.to_string(),
        uuid: job.uuid.clone(),
        name: job.name.clone(),
        plan: serde_json::to_string(plan).unwrap_or_default(),
        since: now,
        tries: 0,
        next_try: now,
        last_error: None,
    }
}

/// The pause after `tries` failed tries.
fn pause(tries: i64) -> i64 {
    let shift = u32::try_from(tries.clamp(0, 10)).unwrap_or(10);
    FIRST_PAUSE.saturating_mul(1 << shift).min(MAX_PAUSE)
}

/// Tries every snapshot that is due.
pub async fn settle<S: Store>(store: &S, connections: &Connections) -> StoreResult<()> {
    let now = crate::time::now();
    for row in store.due_overlays(now, OVERLAYS_PER_TICK).await? {
        let outcome = match serde_json::from_str::<SnapshotPlan>(&row.plan) {
            Err(e) => Err(format!("its recorded plan is unreadable ({e})")),
            Ok(plan) => match connections.get(&row.hypervisor, &row.uri).await {
                Err(e) => {
                    connections.drop_connection(&row.hypervisor);
                    Err(e.to_string())
                }
                Ok(hv) => {
                    let uuid = row.uuid.clone();
                    blocking(move || thaw(&hv, &uuid, &plan, COMMIT_LIMIT))
                        .await
                        .map_err(|e| e.to_string())
                }
            },
        };
        let now = crate::time::now();
        let (event, detail) = match outcome {
            Ok(thawed) => {
                store.remove_overlay(&row.tag).await?;
                let event = match thawed {
                    Thawed::Committed(_) => "committed",
                    _ => "settled",
                };
                (event, settled(&row, &thawed))
            }
            Err(why) => {
                let wait = pause(row.tries);
                store
                    .overlay_failed(&row.tag, &why, now.saturating_add(wait))
                    .await?;
                let detail = format!(
                    "{}: snapshot {} not committed back yet: {why} (next try in {wait} s)",
                    row.name, row.tag
                );
                ("commit-failed", detail)
            }
        };
        eprintln!("coldscan-manager: VM job {}: {detail}", row.vm_job);
        store
            .log_vm_job(row.vm_job, event, Some(&row.hypervisor), &detail, now)
            .await?;
    }
    Ok(())
}

fn settled(row: &OverlayRow, thawed: &Thawed) -> String {
    match thawed {
        Thawed::Committed(targets) => format!(
            "{}: snapshot {} committed back ({}), its overlays removed",
            row.name,
            row.tag,
            targets.join(", ")
        ),
        Thawed::NothingToCommit(removed) if removed.is_empty() => format!(
            "{}: snapshot {}: no disk was on its overlays, nothing left",
            row.name, row.tag
        ),
        Thawed::NothingToCommit(removed) => format!(
            "{}: snapshot {}: no disk was on its overlays; left-over overlay files removed: {}",
            row.name,
            row.tag,
            removed
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Thawed::DomainGone => format!(
            "{}: snapshot {}: the domain is no longer defined; its overlay files, if any, are \
             left where they are (they hold its last writes)",
            row.name, row.tag
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_and_stay_bounded() {
        assert_eq!(pause(0), 30);
        assert_eq!(pause(1), 60);
        assert_eq!(pause(6), 1920);
        assert_eq!(pause(7), MAX_PAUSE);
        assert_eq!(pause(i64::MAX), MAX_PAUSE);
        assert_eq!(pause(-5), 30);
    }
}

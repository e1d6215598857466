//! The VMs page (`GET /vms`): the inventory of every hypervisor connection, each VM with its
//! state, disks, policy and last scan result, and the VM scan jobs with their disks.

use maud::{html, Markup};

use super::pages::{opt, page};
use crate::store::{Session, Store, StoreResult};
use crate::time::rfc3339;

/// VM jobs shown.
const JOBS: i64 = 100;

/// The page.
pub async fn vms_page<S: Store>(store: &S, session: &Session) -> StoreResult<Markup> {
    let hypervisors = store.list_hypervisors().await?;
    let vms = store.list_vms().await?;
    let jobs = store.list_vm_jobs(None, JOBS).await?;
    let mut job_disks = Vec::with_capacity(jobs.len());
    for j in &jobs {
        job_disks.push(store.disk_jobs(j.id).await?);
    }
    Ok(page(
        "coldscan manager: VMs",
        html! {
            h1 { "VMs" }
            p { a href="/" { "Back to the dashboard" } " (logged in as " (session.name) ")" }
            h2 id="hypervisors" { "Hypervisor connections" }
            table {
                tr { th { "name" } th { "URI" } th { "max backups" } th { "NBD listen" } th { "last sync" } th { "error" } }
                @for h in &hypervisors {
                    tr { td { (h.name) } td { (h.uri) } td { (h.max_backups) } td { (opt(&h.nbd_listen)) }
                         td { (h.last_sync.map(rfc3339).unwrap_or_else(|| "never".into())) }
                         td.failed { (opt(&h.last_error)) } }
                }
            }
            h2 id="vms" { "Inventory" }
            table {
                tr { th { "name" } th { "UUID" } th { "connection" } th { "state" } th { "disks" } th { "labels" } th { "scan interval (s)" } th { "last scan" } }
                @for v in &vms {
                    @let disks: Vec<String> = v.disks.iter().map(|d| match &d.pool {
                        Some(p) => format!("{} ({p})", d.target),
                        None => d.target.clone(),
                    }).collect();
                    tr class="vm" {
                        td { (v.name) } td { (v.uuid) } td { (v.hypervisor) } td { (v.state) }
                        td { (disks.join(", ")) } td { (v.policy.labels.join(", ")) }
                        td { (opt(&v.policy.scan_interval)) }
                        @match &v.last_job {
                            None => td.never { "never scanned" },
                            Some(j) if j.state == "done" && j.detections > 0 => td.found { "infected: " (j.detections) " detection(s) (job " (j.id) ")" },
                            Some(j) if j.state == "done" => td.ok { "clean (job " (j.id) ")" },
                            Some(j) if j.state == "failed" => td.failed { "failed (job " (j.id) "): " (opt(&j.error)) },
                            Some(j) => td { (j.state) " (job " (j.id) ")" },
                        }
                    }
                }
            }
            h2 id="vm-jobs" { "VM scan jobs" }
            table {
                tr { th { "id" } th { "VM" } th { "state" } th { "attempts" } th { "connection" } th { "disks" } th { "error" } }
                @for (j, disks) in jobs.iter().zip(&job_disks) {
                    tr { td { (j.id) } td { (j.name) } td class=(j.state) { (j.state) }
                         td { (j.attempts) "/" (j.max_attempts) } td { (j.hypervisor) }
                         td { @for d in disks { (d.disk) ": " (d.state) @if let Some(r) = d.report { " (scan " (r) ", " (d.detections) " detection(s))" } " " } }
                         td { (opt(&j.error)) } }
                }
            }
        },
    ))
}

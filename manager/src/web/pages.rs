//! The HTML of the page.

use maud::{html, Markup, DOCTYPE};

use crate::store::{Filter, Session, Store, StoreResult};
use crate::time::rfc3339;

/// Rows shown per table.
const ROWS: i64 = 100;

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #bbb;padding:.25em .5em;\
text-align:left;font-size:.9em}th{background:#eee}.found{color:#b00;font-weight:bold}\
.ok{color:#070}.stale,.never,.failed{color:#b00}h2{margin-top:1.5em}";

/// A whole page around `body`.
pub fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                style { (maud::PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
}

/// The login form.
pub fn login(error: Option<&str>) -> Markup {
    page(
        "coldscan manager: log in",
        html! {
            h1 { "coldscan manager" }
            @if let Some(e) = error { p.failed { (e) } }
            form method="post" action="/login" {
                label { "Admin token " input type="password" name="token" autocomplete="off" autofocus; }
                " "
                button type="submit" id="login" { "Log in" }
            }
        },
    )
}

/// The value, or nothing.
pub fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map(|v| v.to_string()).unwrap_or_default()
}

/// The dashboard: appliances, scans, detections, not scanned, jobs, webhook deliveries.
pub async fn dashboard<S: Store>(store: &S, session: &Session) -> StoreResult<Markup> {
    let now = crate::time::now();
    let appliances = store.list_appliances().await?;
    let scans = store.list_scans(None, ROWS).await?;
    let detections = store
        .list_detections(&Filter::default(), None, ROWS)
        .await?;
    let not_scanned = store
        .list_not_scanned(&Filter::default(), None, ROWS)
        .await?;
    let jobs = store.list_jobs(None, ROWS).await?;
    let deliveries = store.list_deliveries(None, ROWS).await?;
    let signatures_and_quarantine = super::quarantine::sections(store, session).await?;
    Ok(page(
        "coldscan manager",
        html! {
            h1 { "coldscan manager" }
            form method="post" action="/logout" {
                "Logged in as " (session.name) " "
                input type="hidden" name="csrf" value=(session.csrf);
                button type="submit" { "Log out" }
            }
            p { a href="/vms" { "VMs: hypervisor inventory and VM scans" } }
            h2 id="appliances" { "Appliances" }
            table {
                tr { th { "name" } th { "health" } th { "last heartbeat" } th { "status" } th { "version" } th { "signatures" } th { "disks" } }
                @for a in &appliances {
                    @let health = crate::api::listings_health(a.last_heartbeat, now);
                    tr { td { (a.name) } td class=(health) { (health) }
                         td { (a.last_heartbeat.map(rfc3339).unwrap_or_default()) }
                         td { (opt(&a.status)) } td { (opt(&a.version)) }
                         td { (a.signatures.as_deref().unwrap_or("its own")) } td { (opt(&a.disks)) } }
                }
            }
            h2 id="scans" { "Scans" }
            table {
                tr { th { "id" } th { "appliance" } th { "targets" } th { "status" } th { "started" } th { "duration (s)" } th { "files" } th { "detections" } th { "not scanned" } th { "signatures" } }
                @for s in &scans {
                    @let status = if s.detections > 0 { "infected" } else if s.not_scanned > 0 { "partial" } else { "clean" };
                    tr { td { (s.id) } td { (s.appliance) } td { (s.targets.join(", ")) }
                         td class=(if s.detections > 0 { "found" } else { "ok" }) { (status) }
                         td { (s.started) } td { (format!("{:.1}", s.seconds)) } td { (s.files) }
                         td class=(if s.detections > 0 { "found" } else { "" }) { (s.detections) } td { (s.not_scanned) }
                         td { (s.db.as_ref().map(crate::store::ScanDb::label).unwrap_or_default()) } }
                }
            }
            h2 id="detections" { "Detections" }
            table {
                tr { th { "scan" } th { "target" } th { "partition" } th { "path" } th { "stream" } th { "signature" } th { "sha256" } }
                @for d in &detections {
                    tr { td { (d.scan) } td { (d.target) } td { (d.partition) } td { (d.path) }
                         td { (opt(&d.stream)) } td.found { (d.signature) } td { (opt(&d.sha256)) } }
                }
            }
            h2 id="not-scanned" { "Not scanned" }
            table {
                tr { th { "scan" } th { "target" } th { "partition" } th { "path" } th { "reason" } th { "detail" } }
                @for n in &not_scanned {
                    tr { td { (n.scan) } td { (n.target) } td { (opt(&n.partition)) } td { (opt(&n.path)) }
                         td { (n.reason) } td { (n.detail) } }
                }
            }
            h2 id="jobs" { "Job queue" }
            form method="post" action="/jobs" {
                input type="hidden" name="csrf" value=(session.csrf);
                label { "Target " input type="text" name="target" required; }
                " "
                label { "Appliance (optional) " input type="text" name="appliance"; }
                " "
                button type="submit" { "Enqueue" }
            }
            table {
                tr { th { "id" } th { "target" } th { "appliance" } th { "state" } th { "claimed by" } th { "claims" } th { "lease expires" } th { "report" } th { "error" } }
                @for j in &jobs {
                    tr { td { (j.id) } td { (j.target) } td { (opt(&j.appliance)) } td { (j.state) }
                         td { (opt(&j.claimed_by)) } td { (j.claims) }
                         td { (j.lease_expires.map(rfc3339).unwrap_or_default()) }
                         td { (opt(&j.report)) } td { (opt(&j.error)) } }
                }
            }
            (signatures_and_quarantine)
            h2 id="deliveries" { "Webhook deliveries" }
            table {
                tr { th { "id" } th { "url" } th { "scan" } th { "target" } th { "state" } th { "attempts" } th { "last status" } th { "last error" } th { "delivered" } }
                @for d in &deliveries {
                    tr { td { (d.id) } td { (d.url) } td { (d.scan) } td { (d.target) } td class=(d.state) { (d.state) }
                         td { (d.attempts) } td { (opt(&d.last_status)) } td { (opt(&d.last_error)) }
                         td { (d.delivered.map(rfc3339).unwrap_or_default()) } }
                }
            }
        },
    ))
}

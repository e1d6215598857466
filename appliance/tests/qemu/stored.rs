//! What the manager stored, as the tests compare it: one report per disk (found by the disk's
//! identity in its targets), and detections as (path, stream, signature) sets.

use std::collections::BTreeSet;

use super::Manager;

/// A detection as the tests compare it: path, stream, signature.
pub type Found = (String, Option<String>, String);

/// The (path, stream, signature) set of a report.
pub fn detections(report: &serde_json::Value) -> BTreeSet<Found> {
    report["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_string(),
                d["stream"].as_str().map(String::from),
                d["signature"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The detections the manager lists (`detections --json`) for scan `id`; they must equal the
/// stored report's own.
pub fn stored_detections(manager: &Manager, id: i64) -> BTreeSet<Found> {
    let rows: Vec<serde_json::Value> = manager
        .detections()
        .into_iter()
        .filter(|d| d["scan"] == id)
        .collect();
    let set = detections(&serde_json::json!({ "detections": rows }));
    assert_eq!(set.len(), rows.len(), "a detection listed twice: {rows:#?}");
    set
}

/// The one stored report whose target is `target` (`virtio-SERIAL` for an attached disk, the
/// URL for an export); panics unless there is exactly one.
pub fn report_for_target(manager: &Manager, target: &str) -> serde_json::Value {
    let scans = manager.scans();
    let found: Vec<&serde_json::Value> = scans
        .iter()
        .filter(|s| {
            s["targets"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == target))
        })
        .collect();
    assert_eq!(found.len(), 1, "stored scans of {target}: {scans:#?}");
    let id = found[0]["id"].as_i64().unwrap();
    let report = manager.report(id);
    assert_eq!(report["targets"][0]["target"], target, "{report:#}");
    assert_eq!(
        stored_detections(manager, id),
        detections(&report),
        "the detections listing differs from the report: {report:#}"
    );
    report
}

/// The one stored report of the virtio disk with `serial`.
pub fn report_for(manager: &Manager, serial: &str) -> serde_json::Value {
    report_for_target(manager, &format!("virtio-{serial}"))
}

//! Quarantine of a libvirt domain: every network interface's link is set down, in the running
//! domain and in its persistent definition, through `virDomainUpdateDeviceFlags` (libvirt's
//! "Domain XML format", section "Modifying virtual link state": `<link state='down'/>` in an
//! `<interface>`), as `virsh domif-setlink` does, never by parsing `virsh` output. The guest
//! keeps running and keeps its disks; it only loses the network.
//!
//! Before changing anything the link state of every interface (live and persistent, keyed by
//! MAC address) is recorded in the database, and [`release`] restores exactly that state:
//! a `<link>` element that was absent is removed again, one that said `up` or `down` says it
//! again. A domain already recorded as quarantined is left alone (quarantining twice is one
//! action, logged once); every action is logged with who, when, the domain's UUID and the
//! states before and after.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virt::domain::Domain;

use super::{blocking, call, Hypervisor, LibvirtError};
use crate::store::quarantine::{QuarantineRow, QuarantineStore};

/// The link state of one interface: its MAC address and the `state` of its `<link>` element
/// (`None`: no such element, which libvirt reads as up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// MAC address (the interface's identity for `virDomainUpdateDeviceFlags`).
    pub mac: String,
    /// `up`, `down`, or `None` when the interface has no `<link>` element.
    pub state: Option<String>,
}

/// The link states of a domain's interfaces: in the running domain (`None` when it is not
/// running) and in its persistent definition (`None` for a transient domain).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    /// Live.
    pub live: Option<Vec<Link>>,
    /// Persistent.
    pub config: Option<Vec<Link>>,
}

impl Links {
    /// Whether every interface's link is down, live and persistent.
    pub fn all_down(&self) -> bool {
        self.live
            .iter()
            .chain(self.config.iter())
            .flatten()
            .all(|l| l.state.as_deref() == Some("down"))
    }

    fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// What a quarantine or release call did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Domain name.
    pub name: String,
    /// Domain UUID.
    pub uuid: String,
    /// False when nothing was to be done (already quarantined; not quarantined).
    pub changed: bool,
    /// Link states before.
    pub before: Links,
    /// Link states after.
    pub after: Links,
}

/// Why a quarantine action failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuarantineError {
    /// libvirt failed or gave XML we cannot use.
    #[error(transparent)]
    Libvirt(#[from] LibvirtError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// libvirt accepted the change but the domain does not show it.
    #[error("{0}")]
    NotApplied(String),
}

/// Who asks and why, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Token name, `cli`, or `policy`.
    pub who: String,
    /// Why (a scan id, a note).
    pub reason: String,
}

/// The link states of `domain` now.
pub fn links(domain: &Domain) -> Result<Links, LibvirtError> {
    let name = call("domain name", domain.get_name())?;
    let live = if call(format!("state of {name}"), domain.is_active())? {
        let xml = call(format!("live XML of {name}"), domain.get_xml_desc(0))?;
        Some(interface_links(&xml)?)
    } else {
        None
    };
    let config = if call(format!("persistence of {name}"), domain.is_persistent())? {
        let xml = call(
            format!("persistent XML of {name}"),
            domain.get_xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE),
        )?;
        Some(interface_links(&xml)?)
    } else {
        None
    };
    Ok(Links { live, config })
}

/// Sets every interface's link of `domain` to `want` (per MAC; interfaces not named keep
/// theirs) in the live domain and in the persistent definition, skipping interfaces already in
/// that state.
fn apply(
    domain: &Domain,
    live: Option<&[Link]>,
    config: Option<&[Link]>,
) -> Result<(), LibvirtError> {
    let name = call("domain name", domain.get_name())?;
    for (want, xml_flags, affect, what) in [
        (live, 0, virt::sys::VIR_DOMAIN_AFFECT_LIVE, "live"),
        (
            config,
            virt::sys::VIR_DOMAIN_XML_INACTIVE,
            virt::sys::VIR_DOMAIN_AFFECT_CONFIG,
            "persistent",
        ),
    ] {
        let Some(want) = want else { continue };
        let xml = call(
            format!("{what} XML of {name}"),
            domain.get_xml_desc(xml_flags),
        )?;
        for (mac, state, element) in interfaces(&xml)? {
            let Some(target) = want.iter().find(|l| l.mac == mac) else {
                continue;
            };
            if target.state == state {
                continue;
            }
            let updated = with_link_state(&element, target.state.as_deref())?;
            call(
                format!("setting the {what} link of {mac} on {name}"),
                domain.update_device_flags(&updated, affect),
            )?;
        }
    }
    Ok(())
}

/// Every interface of `links` with its link down.
fn all_down(links: &Option<Vec<Link>>) -> Option<Vec<Link>> {
    links.as_ref().map(|v| {
        v.iter()
            .map(|l| Link {
                mac: l.mac.clone(),
                state: Some("down".into()),
            })
            .collect()
    })
}

/// The domain an action is about, with its link states before the action.
struct Subject {
    dom: Domain,
    name: String,
    uuid: String,
    before: Links,
}

impl Subject {
    /// Looks `domain` (name or UUID) up on `hv` and reads its links, on the blocking pool.
    async fn find(hv: &Arc<Hypervisor>, domain: &str) -> Result<Subject, LibvirtError> {
        let (hv, key) = (hv.clone(), domain.to_string());
        blocking(move || {
            let dom = hv.domain(&key)?;
            let name = call("domain name", dom.get_name())?;
            let uuid = call(format!("UUID of {name}"), dom.get_uuid_string())?;
            let before = links(&dom)?;
            Ok(Subject {
                dom,
                name,
                uuid,
                before,
            })
        })
        .await
    }

    /// The outcome of an action that changed nothing.
    fn unchanged(self) -> Outcome {
        Outcome {
            name: self.name,
            uuid: self.uuid,
            changed: false,
            after: self.before.clone(),
            before: self.before,
        }
    }
}

/// Quarantines the domain `domain` (name or UUID) on `hv`: its links go down, live and
/// persistent, and the previous states are recorded. A domain already quarantined is left as
/// it is (`changed` false, nothing logged). libvirt is called on the blocking pool.
pub async fn quarantine<S: QuarantineStore>(
    hv: &Arc<Hypervisor>,
    domain: &str,
    store: &S,
    actor: &Actor,
) -> Result<Outcome, QuarantineError> {
    let subject = Subject::find(hv, domain).await?;
    if store.quarantine_of(&subject.uuid).await?.is_some() {
        return Ok(subject.unchanged());
    }
    let (dom, before) = (subject.dom.clone(), subject.before.clone());
    let after = blocking(move || {
        apply(
            &dom,
            all_down(&before.live).as_deref(),
            all_down(&before.config).as_deref(),
        )?;
        let after = links(&dom)?;
        if !after.all_down() {
            let _ = apply(&dom, before.live.as_deref(), before.config.as_deref());
        }
        Ok(after)
    })
    .await?;
    let Subject {
        name, uuid, before, ..
    } = subject;
    if !after.all_down() {
        return Err(QuarantineError::NotApplied(format!(
            "{name}: libvirt accepted the link change but the domain still shows {}",
            after.json()
        )));
    }
    let row = QuarantineRow {
        uuid: uuid.clone(),
        uri: hv.uri().to_string(),
        name: name.clone(),
        previous: before.json(),
        since: crate::time::now(),
        actor: actor.who.clone(),
        reason: actor.reason.clone(),
    };
    // Another manager may have recorded it meanwhile: then its record (and its `previous`)
    // stands, and this call changed nothing it must log.
    let changed = store.record_quarantine(&row, &after.json()).await?;
    Ok(Outcome {
        name,
        uuid,
        changed,
        before,
        after,
    })
}

/// Ends the quarantine of `domain`: every interface gets back the link state recorded before
/// it. A domain not quarantined is left as it is (`changed` false, nothing logged). libvirt is
/// called on the blocking pool.
pub async fn release<S: QuarantineStore>(
    hv: &Arc<Hypervisor>,
    domain: &str,
    store: &S,
    actor: &Actor,
) -> Result<Outcome, QuarantineError> {
    let subject = Subject::find(hv, domain).await?;
    let Some(row) = store.quarantine_of(&subject.uuid).await? else {
        return Ok(subject.unchanged());
    };
    let previous: Links = serde_json::from_str(&row.previous).map_err(|e| {
        LibvirtError::Xml(format!(
            "the recorded link states of {} do not parse: {e}",
            subject.name
        ))
    })?;
    let dom = subject.dom.clone();
    let after = blocking(move || {
        // A domain started since the quarantine runs with its persistent links: restore those.
        let live = previous.live.as_ref().or(previous.config.as_ref());
        apply(&dom, live.map(Vec::as_slice), previous.config.as_deref())?;
        links(&dom)
    })
    .await?;
    let Subject {
        name, uuid, before, ..
    } = subject;
    store
        .record_release(
            &uuid,
            &actor.who,
            &before.json(),
            &after.json(),
            crate::time::now(),
        )
        .await?;
    Ok(Outcome {
        name,
        uuid,
        changed: true,
        before,
        after,
    })
}

/// The policy action "on detection: quarantine": called when a report with detections arrives
/// for the domain `uuid` on `hv`. Quarantines it (once) and names the scan in the log.
pub async fn on_detection<S: QuarantineStore>(
    hv: &Arc<Hypervisor>,
    uuid: &str,
    scan: i64,
    store: &S,
) -> Result<Outcome, QuarantineError> {
    quarantine(
        hv,
        uuid,
        store,
        &Actor {
            who: "policy".into(),
            reason: format!("detections in scan {scan}"),
        },
    )
    .await
}

/// The interfaces of a domain XML: MAC, link state, and the `<interface>` element's text.
fn interfaces(xml: &str) -> Result<Vec<(String, Option<String>, String)>, LibvirtError> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|e| LibvirtError::Xml(format!("domain XML does not parse: {e}")))?;
    let mut out = Vec::new();
    let devices = doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("devices"));
    for iface in devices
        .flat_map(|d| d.children())
        .filter(|n| n.has_tag_name("interface"))
    {
        let mac = iface
            .children()
            .find(|n| n.has_tag_name("mac"))
            .and_then(|m| m.attribute("address"))
            .ok_or_else(|| LibvirtError::Xml("an interface without a MAC address".into()))?
            .to_ascii_lowercase();
        let state = iface
            .children()
            .find(|n| n.has_tag_name("link"))
            .and_then(|l| l.attribute("state"))
            .map(str::to_string);
        out.push((mac, state, xml[iface.range()].to_string()));
    }
    Ok(out)
}

/// The link states of a domain XML's interfaces.
fn interface_links(xml: &str) -> Result<Vec<Link>, LibvirtError> {
    Ok(interfaces(xml)?
        .into_iter()
        .map(|(mac, state, _)| Link { mac, state })
        .collect())
}

/// `element` (one `<interface>` element's XML) with its `<link>` set to `state`, or removed
/// for `None`. Positions come from the XML parser; the rest of the element is kept as libvirt
/// wrote it.
fn with_link_state(element: &str, state: Option<&str>) -> Result<String, LibvirtError> {
    let doc = roxmltree::Document::parse(element)
        .map_err(|e| LibvirtError::Xml(format!("interface XML does not parse: {e}")))?;
    let iface = doc.root_element();
    let new = state.map(|s| format!("<link state='{s}'/>"));
    if let Some(link) = iface.children().find(|n| n.has_tag_name("link")) {
        let r = link.range();
        return Ok(format!(
            "{}{}{}",
            &element[..r.start],
            new.unwrap_or_default(),
            &element[r.end..]
        ));
    }
    let Some(new) = new else {
        return Ok(element.to_string());
    };
    // Insert before the closing tag (`</interface>` or a prefixed one); an empty element
    // `<interface .../>` is opened up.
    let end = element.trim_end();
    if let Some(at) = end.rfind("</") {
        return Ok(format!("{}{new}{}", &end[..at], &end[at..]));
    }
    let open = end
        .strip_suffix("/>")
        .ok_or_else(|| LibvirtError::Xml("an interface element that does not end".into()))?;
    Ok(format!("{open}>{new}</interface>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "<domain type='qemu'><name>g</name><devices>
  <disk type='file'/>
  <interface type='user'>
    <mac address='52:54:00:AA:00:01'/>
    <model type='virtio'/>
  </interface>
  <interface type='network'>
    <mac address='52:54:00:aa:00:02'/>
    <source network='default'/>
    <link state='up'/>
    <alias name='net1'/>
  </interface>
</devices></domain>";

    #[test]
    fn interfaces_are_read_with_their_link_state() {
        let links = interface_links(DOMAIN).unwrap();
        assert_eq!(
            links,
            [
                Link {
                    mac: "52:54:00:aa:00:01".into(),
                    state: None
                },
                Link {
                    mac: "52:54:00:aa:00:02".into(),
                    state: Some("up".into())
                }
            ]
        );
        assert!(interface_links("<domain><devices/></domain>")
            .unwrap()
            .is_empty());
        assert!(interface_links("<domain><devices><interface/></devices></domain>").is_err());
        assert!(interface_links("<domain").is_err());
    }

    #[test]
    fn the_link_element_is_added_replaced_and_removed() {
        let ifaces = interfaces(DOMAIN).unwrap();
        let first = &ifaces[0].2;
        let down = with_link_state(first, Some("down")).unwrap();
        assert_eq!(interface_links_of(&down), Some("down".into()));
        assert!(down.contains("<model type='virtio'/>"), "{down}");
        // Back to no element at all: exactly the original.
        assert_eq!(&with_link_state(&down, None).unwrap(), first);
        let second = &ifaces[1].2;
        let down = with_link_state(second, Some("down")).unwrap();
        assert_eq!(interface_links_of(&down), Some("down".into()));
        assert_eq!(&with_link_state(&down, Some("up")).unwrap(), second);
        assert_eq!(
            with_link_state("<interface type='user'/>", Some("down")).unwrap(),
            "<interface type='user'><link state='down'/></interface>"
        );
        assert_eq!(
            with_link_state("<interface type='user'/>", None).unwrap(),
            "<interface type='user'/>"
        );
    }

    fn interface_links_of(element: &str) -> Option<String> {
        let xml = format!("<domain><devices>{element}</devices></domain>");
        interface_links(&xml).unwrap()[0].state.clone()
    }

    #[test]
    fn all_down_needs_every_link_down() {
        let l = |s: Option<&str>| Link {
            mac: "m".into(),
            state: s.map(str::to_string),
        };
        let mut links = Links {
            live: Some(vec![l(Some("down"))]),
            config: Some(vec![l(Some("down"))]),
        };
        assert!(links.all_down());
        links.config = Some(vec![l(None)]);
        assert!(!links.all_down());
        assert!(Links::default().all_down());
    }
}

//! Events as kubectl prints them: `berth get events` (LAST SEEN, TYPE, REASON, OBJECT,
//! MESSAGE) and the `Events:` section that ends `berth describe`.

use super::{age, align, format_time, or_empty, or_none, Writer, NONE, TABLE};
use berth_proto::k8s_openapi::api::core::v1::{Event, ObjectReference};
use berth_proto::{Kind, Resource};
use jiff::Timestamp;

/// The events about `object`, oldest last seen first: those naming its uid, or (for events
/// recorded without one) its kind, namespace and name.
pub fn events_about<'a>(object: &Resource, events: &'a [Event]) -> Vec<&'a Event> {
    let meta = object.metadata();
    let kind = object.kind();
    let mut about: Vec<&Event> = events
        .iter()
        .filter(|event| {
            let involved = &event.involved_object;
            if involved.kind.as_deref() != Some(kind.as_str()) || involved.name != meta.name {
                return false;
            }
            if kind.namespaced() && involved.namespace != meta.namespace {
                return false;
            }
            match (&involved.uid, &meta.uid) {
                (Some(event_uid), Some(uid)) => event_uid == uid,
                _ => true,
            }
        })
        .collect();
    sort_by_last_seen(&mut about);
    about
}

/// Oldest last seen first, as kubectl sorts them (ties in name order: names grow with time).
pub fn sort_by_last_seen(events: &mut [&Event]) {
    events.sort_by(|a, b| {
        let key = |e: &Event| (berth_proto::events::last_seen(e), e.metadata.name.clone());
        key(a).cmp(&key(b))
    });
}

/// `Events:` and a Type/Reason/Age/From/Message table, or `Events:  <none>`.
pub(super) fn describe_events(w: &mut Writer, events: &[&Event], now: Timestamp) {
    if events.is_empty() {
        w.line(0, format!("Events:\t{NONE}"));
        return;
    }
    w.line(0, "Events:");
    w.line(1, "Type\tReason\tAge\tFrom\tMessage");
    w.line(1, "----\t------\t----\t----\t-------");
    for event in events {
        let cells = [
            event.type_.clone().unwrap_or_default(),
            event.reason.clone().unwrap_or_default(),
            interval(event, now),
            source(event),
            event.message.clone().unwrap_or_default().trim().to_string(),
        ];
        w.line(1, cells.join("\t"));
    }
}

/// An Event itself: what it is about, why, and when.
pub(super) fn describe_event(w: &mut Writer, event: &Event) {
    let involved = &event.involved_object;
    w.line(0, "Involved Object:");
    w.line(1, format!("Kind:\t{}", or_empty(&involved.kind)));
    w.line(1, format!("Name:\t{}", or_empty(&involved.name)));
    if let Some(namespace) = &involved.namespace {
        w.line(1, format!("Namespace:\t{namespace}"));
    }
    w.line(1, format!("UID:\t{}", or_empty(&involved.uid)));
    w.line(0, format!("Type:\t{}", or_empty(&event.type_)));
    w.line(0, format!("Reason:\t{}", or_empty(&event.reason)));
    w.line(0, format!("Message:\t{}", or_empty(&event.message)));
    let source = event.source.clone().unwrap_or_default();
    w.line(
        0,
        format!("Source:\t{}", or_none(source.component.as_deref())),
    );
    w.line(0, format!("Count:\t{}", event.count.unwrap_or(1)));
    let (first, last) = (&event.first_timestamp, &event.last_timestamp);
    w.line(
        0,
        format!("First Timestamp:\t{}", format_time(first.as_ref())),
    );
    w.line(
        0,
        format!("Last Timestamp:\t{}", format_time(last.as_ref())),
    );
}

/// "5s", or "2m (x4 over 10m)" for an event that happened several times.
fn interval(event: &Event, now: Timestamp) -> String {
    let first = event
        .event_time
        .as_ref()
        .map(|t| t.0)
        .or(event.first_timestamp.as_ref().map(|t| t.0));
    let first = age(first.as_ref(), now);
    match event.count.unwrap_or(1) {
        count if count > 1 => {
            let last = event.last_timestamp.as_ref().map(|t| t.0);
            format!("{} (x{count} over {first})", age(last.as_ref(), now))
        }
        _ => first,
    }
}

/// kubectl's From: `component, host`, the component alone, or `<unknown>`.
fn source(event: &Event) -> String {
    let source = event.source.clone().unwrap_or_default();
    let non_empty = |a: Option<String>, b: &Option<String>| {
        a.filter(|s| !s.is_empty())
            .or(b.clone().filter(|s| !s.is_empty()))
    };
    let component = non_empty(source.component, &event.reporting_component);
    let host = non_empty(source.host, &event.reporting_instance);
    match (component, host) {
        (None, _) => "<unknown>".to_string(),
        (Some(component), None) => component,
        (Some(component), Some(host)) => format!("{component}, {host}"),
    }
}

/// `pod/web-1`: the involved object as kubectl's OBJECT column names it.
fn object(involved: &ObjectReference) -> String {
    let kind = involved.kind.as_deref().unwrap_or_default();
    let kind = match Kind::ALL.iter().find(|k| k.as_str() == kind) {
        Some(kind) => kind.as_str().to_ascii_lowercase(),
        None => kind.to_ascii_lowercase(),
    };
    format!("{kind}/{}", involved.name.as_deref().unwrap_or_default())
}

/// `berth get events`: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE (NAMESPACE first with `-A`;
/// SUBOBJECT, SOURCE, FIRST SEEN, COUNT and NAME with `-o wide`), oldest last seen first.
pub fn table(events: &[Resource], all_namespaces: bool, wide: bool, now: Timestamp) -> String {
    let mut sorted: Vec<&Event> = events
        .iter()
        .filter_map(|o| match o {
            Resource::Event(event) => Some(event.as_ref()),
            _ => None,
        })
        .collect();
    if sorted.is_empty() {
        return String::new();
    }
    sort_by_last_seen(&mut sorted);
    let mut header = vec!["LAST SEEN", "TYPE", "REASON", "OBJECT"];
    if wide {
        header.extend(["SUBOBJECT", "SOURCE"]);
    }
    header.push("MESSAGE");
    if wide {
        header.extend(["FIRST SEEN", "COUNT", "NAME"]);
    }
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut lines = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for event in sorted {
        let last = berth_proto::events::last_seen(event);
        let last_seen = match event.count.unwrap_or(1) {
            count if count > 1 => {
                let first = event.first_timestamp.as_ref().map(|t| t.0);
                format!(
                    "{} (x{count} over {})",
                    age(last.as_ref(), now),
                    age(first.as_ref(), now)
                )
            }
            _ => age(last.as_ref(), now),
        };
        let mut row = vec![
            last_seen,
            event.type_.clone().unwrap_or_default(),
            event.reason.clone().unwrap_or_default(),
            object(&event.involved_object),
        ];
        if wide {
            let field = event.involved_object.field_path.clone().unwrap_or_default();
            row.extend([field, source(event)]);
        }
        row.push(event.message.clone().unwrap_or_default().trim().to_string());
        if wide {
            let first = event.first_timestamp.as_ref().map(|t| t.0);
            row.extend([
                age(first.as_ref(), now),
                event.count.unwrap_or(1).to_string(),
                event.metadata.name.clone().unwrap_or_default(),
            ]);
        }
        if all_namespaces {
            row.insert(0, event.metadata.namespace.clone().unwrap_or_default());
        }
        lines.push(row);
    }
    align(&lines, TABLE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: serde_json::Value) -> Event {
        serde_json::from_value(value).unwrap()
    }

    fn now() -> Timestamp {
        "2026-05-01T12:00:00Z".parse().unwrap()
    }

    fn events() -> Vec<Event> {
        vec![
            event(
                json!({"metadata": {"name": "web.2", "namespace": "default"},
                "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web", "uid": "u1"},
                "reason": "BackOff", "message": "Back-off restarting failed container c", "type": "Warning",
                "source": {"component": "kubelet", "host": "node-1"}, "count": 4,
                "firstTimestamp": "2026-05-01T11:50:00Z", "lastTimestamp": "2026-05-01T11:58:00Z"}),
            ),
            event(
                json!({"metadata": {"name": "web.1", "namespace": "default"},
                "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web", "uid": "u1"},
                "reason": "Scheduled", "message": "Successfully assigned default/web to node-1",
                "type": "Normal", "source": {"component": "default-scheduler"}, "count": 1,
                "firstTimestamp": "2026-05-01T11:49:55Z", "lastTimestamp": "2026-05-01T11:49:55Z"}),
            ),
            // An earlier pod of the same name: another uid.
            event(
                json!({"metadata": {"name": "web.0", "namespace": "default"},
                "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web", "uid": "u0"},
                "reason": "Killing", "message": "Stopping container c", "type": "Normal",
                "source": {"component": "kubelet"}, "lastTimestamp": "2026-05-01T11:00:00Z"}),
            ),
        ]
    }

    #[test]
    fn get_events_table_is_sorted_by_last_seen() {
        let objects: Vec<Resource> = events().into_iter().map(Resource::from).collect();
        assert_eq!(
            table(&objects, false, false, now()),
            "LAST SEEN          TYPE      REASON      OBJECT    MESSAGE\n\
             60m                Normal    Killing     pod/web   Stopping container c\n\
             10m                Normal    Scheduled   pod/web   Successfully assigned default/web to node-1\n\
             2m (x4 over 10m)   Warning   BackOff     pod/web   Back-off restarting failed container c\n"
        );
        let wide = table(&objects[..1], true, true, now());
        assert_eq!(
            wide.lines()
                .next()
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            [
                "NAMESPACE",
                "LAST",
                "SEEN",
                "TYPE",
                "REASON",
                "OBJECT",
                "SUBOBJECT",
                "SOURCE",
                "MESSAGE",
                "FIRST",
                "SEEN",
                "COUNT",
                "NAME"
            ]
        );
        assert!(wide.contains("kubelet, node-1"), "{wide}");
        assert!(
            wide.trim_end().ends_with("10m          4       web.2"),
            "{wide}"
        );
    }

    #[test]
    fn describe_lists_the_events_of_this_object() {
        let pod = Resource::from(
            serde_json::from_value::<berth_proto::k8s_openapi::api::core::v1::Pod>(json!({
                "metadata": {"name": "web", "namespace": "default", "uid": "u1"}}))
            .unwrap(),
        );
        let events = events();
        let about = events_about(&pod, &events);
        let mut w = Writer::default();
        describe_events(&mut w, &about, now());
        assert_eq!(
            w.finish(),
            "Events:\n\
             \x20 Type     Reason     Age               From               Message\n\
             \x20 ----     ------     ----              ----               -------\n\
             \x20 Normal   Scheduled  10m               default-scheduler  Successfully assigned default/web to node-1\n\
             \x20 Warning  BackOff    2m (x4 over 10m)  kubelet, node-1    Back-off restarting failed container c\n"
        );
        let mut w = Writer::default();
        describe_events(&mut w, &[], now());
        assert_eq!(w.finish(), "Events:  <none>\n");
    }
}

//! Prometheus exposition, one way for every process that serves `/metrics`
//! (the edge, the control plane, the DNS server to come): the registry as
//! OpenMetrics text and the content type to send it with. Each process
//! keeps its own metric families; only the exposition is shared. Also the
//! JSON line logs written off the request path ([`line_log`]), whose drops
//! are counted here.
#![forbid(unsafe_code)]

pub mod line_log;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every family of `registry` as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// The label of an info gauge: the version of what runs (a config's hash).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

/// An info gauge (`…_config_info{version}`) now says `version` runs: 1 for
/// it, and the series of `was` (the one before) gone.
pub fn set_running_version(info: &Family<VersionLabels, Gauge>, was: Option<&str>, version: &str) {
    if let Some(w) = was.filter(|w| *w != version) {
        info.remove(&VersionLabels {
            version: w.to_string(),
        });
    }
    info.get_or_create(&VersionLabels {
        version: version.to_string(),
    })
    .set(1);
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn a_registry_reads_as_openmetrics_text() {
        let mut r = Registry::with_prefix("switchyard");
        let c: Counter = Counter::default();
        r.register("changes", "Changes made", c.clone());
        c.inc();
        let text = encode(&r);
        assert!(text.contains("switchyard_changes_total 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

//! Prometheus exposition, one way for every process that serves `/metrics`
//! (the edge, the control plane, the DNS server to come): the registry as
//! OpenMetrics text and the content type to send it with. Each process
//! keeps its own metric families; only the exposition is shared. Also the
//! JSON line logs written off the request path ([`line_log`]), whose drops
//! are counted here.
#![forbid(unsafe_code)]

pub mod line_log;

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

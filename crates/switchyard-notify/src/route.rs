//! Who hears about a notice: silences first, then the routes in order.
//! Pure, so every routing rule is checked without a network.

use crate::config::{NotifyConfig, RouteConfig};
use crate::types::{Notice, Silence};

/// The decision for one notice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Routed {
    /// Receiver names in route order, each once. Empty when silenced or when
    /// no route matched.
    pub receivers: Vec<String>,
    /// The id of the silence that suppressed the notice.
    pub silenced_by: Option<String>,
}

/// Routes `notice` at `now_ms`.
///
/// A silence in force that matches suppresses every receiver, so a silence is
/// a promise nobody is paged, whatever the routes say; the first such silence
/// (in the order given) is named so the timeline can say why nobody was told.
/// Expired silences are ignored. Otherwise routes are tried in order: a
/// matching route adds its receivers and ends the search unless it says
/// `continue`. No matching route means nobody is told.
pub fn route(cfg: &NotifyConfig, notice: &Notice, silences: &[Silence], now_ms: u64) -> Routed {
    if let Some(s) = silences
        .iter()
        .find(|s| s.is_active(now_ms) && s.matches(notice))
    {
        return Routed {
            receivers: Vec::new(),
            silenced_by: Some(s.id.clone()),
        };
    }
    let mut receivers: Vec<String> = Vec::new();
    for r in &cfg.routes {
        if !route_matches(r, notice) {
            continue;
        }
        for name in &r.receivers {
            if !receivers.contains(name) {
                receivers.push(name.clone());
            }
        }
        if !r.continue_matching {
            break;
        }
    }
    Routed {
        receivers,
        silenced_by: None,
    }
}

/// Service in the list (or no list), and at least `min_severity` (or none).
/// A `min_severity` that does not parse matches nothing: validation reports
/// it, and until then guessing could page people on the wrong incidents.
fn route_matches(r: &RouteConfig, notice: &Notice) -> bool {
    let service = r.services.is_empty() || r.services.contains(&notice.service);
    let severity = match r.min_severity() {
        Ok(None) => true,
        Ok(Some(min)) => notice.severity.is_at_least(min),
        Err(_) => false,
    };
    service && severity
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Severity;

    fn cfg(routes: Vec<RouteConfig>) -> NotifyConfig {
        NotifyConfig {
            routes,
            ..NotifyConfig::default()
        }
    }

    fn rc(services: &[&str], min: Option<&str>, to: &[&str], cont: bool) -> RouteConfig {
        RouteConfig {
            services: services.iter().map(|s| s.to_string()).collect(),
            min_severity: min.map(str::to_string),
            receivers: to.iter().map(|s| s.to_string()).collect(),
            continue_matching: cont,
        }
    }

    fn notice(service: &str, severity: Severity) -> Notice {
        Notice {
            incident_id: "inc-1".into(),
            service: service.into(),
            severity,
            status: "investigating".into(),
            title: "t".into(),
            summary: "s".into(),
            scopes: vec!["zone:eu/eu-1a".into()],
            event: "opened".into(),
            at_ms: 1,
            started_at_ms: 1,
            ended_at_ms: None,
            url: None,
            urgent: false,
            acknowledged: false,
        }
    }

    fn silence(id: &str, until_ms: u64) -> Silence {
        Silence {
            id: id.into(),
            service: Some("catalog".into()),
            severity: None,
            scope_prefix: None,
            until_ms,
            reason: "maintenance".into(),
            created_by: "ops".into(),
        }
    }

    #[test]
    fn first_match_wins_unless_continue() {
        let c = cfg(vec![
            rc(&["catalog"], Some("SEV2"), &["pager"], true),
            rc(&["catalog"], None, &["chat"], false),
            rc(&[], None, &["everyone"], false),
        ]);
        let r = route(&c, &notice("catalog", Severity::Sev1), &[], 0);
        assert_eq!(r.receivers, ["pager", "chat"]);
        let r = route(&c, &notice("catalog", Severity::Sev3), &[], 0);
        assert_eq!(r.receivers, ["chat"], "SEV3 is below SEV2");
        let r = route(&c, &notice("search", Severity::Sev1), &[], 0);
        assert_eq!(r.receivers, ["everyone"]);
        assert_eq!(r.silenced_by, None);
    }

    #[test]
    fn no_match_means_nobody_and_receivers_are_listed_once() {
        let c = cfg(vec![
            rc(&["catalog"], None, &["a", "b"], true),
            rc(&["catalog"], None, &["b", "a", "c"], false),
        ]);
        assert_eq!(
            route(&c, &notice("catalog", Severity::Sev4), &[], 0).receivers,
            ["a", "b", "c"]
        );
        assert!(route(&c, &notice("search", Severity::Sev1), &[], 0)
            .receivers
            .is_empty());
    }

    #[test]
    fn unparsable_min_severity_matches_nothing() {
        let c = cfg(vec![
            rc(&[], Some("SEV9"), &["a"], false),
            rc(&[], None, &["b"], false),
        ]);
        assert_eq!(
            route(&c, &notice("x", Severity::Sev1), &[], 0).receivers,
            ["b"]
        );
    }

    #[test]
    fn a_silence_in_force_suppresses_everyone_and_an_expired_one_does_not() {
        let c = cfg(vec![rc(&[], None, &["a"], false)]);
        let n = notice("catalog", Severity::Sev1);
        let silences = [silence("old", 100), silence("maint", 1000)];
        let r = route(&c, &n, &silences, 500);
        assert_eq!(r.receivers, Vec::<String>::new());
        assert_eq!(r.silenced_by.as_deref(), Some("maint"));
        let r = route(&c, &n, &silences, 1000);
        assert_eq!(r.receivers, ["a"], "expired at until_ms");
        assert_eq!(r.silenced_by, None);
        let r = route(&c, &notice("search", Severity::Sev1), &silences, 500);
        assert_eq!(r.receivers, ["a"], "another service is not silenced");
    }
}

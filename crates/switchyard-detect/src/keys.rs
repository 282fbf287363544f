//! The keys the engine files its numbers, findings and alarm histories
//! under. Named fields instead of tuples of strings, so a service cannot be
//! read as a zone by position. Fields are declared in the order the engine
//! sorts by (the derived `Ord` compares them in that order), which fixes the
//! order of every map walk and so of every finding and alarm it emits.

/// One instance of a service in its zone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct InstanceKey {
    pub service: String,
    pub zone: String,
    pub instance: String,
}

/// One zone as a service sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ZoneKey {
    pub service: String,
    pub zone: String,
}

/// A probed path of a service between two places: zone to zone for
/// instance heartbeats, region to region for edge probes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ProbeKey {
    pub service: String,
    pub from: String,
    pub to: String,
}

/// One possible finding: what a track follows from second to second.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TrackKey {
    pub service: String,
    /// `zone:NAME`, `link:FROM->TO`, … as in [`crate::Finding::scope`].
    pub scope: String,
    pub kind: String,
}

impl TrackKey {
    pub fn new(service: &str, scope: impl Into<String>, kind: impl Into<String>) -> TrackKey {
        TrackKey {
            service: service.into(),
            scope: scope.into(),
            kind: kind.into(),
        }
    }
}

/// One place (`zone` or `region` level) of a service, for static thresholds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PlaceKey {
    pub service: String,
    pub level: &'static str,
    pub name: String,
}

/// A static threshold's verdicts on one place.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ThresholdKey {
    pub threshold: String,
    pub place: PlaceKey,
}

/// An ingested alert that raised a finding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct AlertKey {
    pub alert: String,
    pub scope: String,
}

/// One route of a service in one region (or zone, while counting).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RouteKey {
    pub service: String,
    pub route: String,
    pub place: String,
}

//! Steering: from the config, the controls and what the caller knows of
//! health, where a service's traffic goes — which region, which zone, which
//! instance, and whether the capacity guard had to fail open. The edge and the
//! DNS server both steer with this crate, so they never disagree about where
//! users go; and because it is pure (no I/O, no clock, randomness passed in),
//! every rule is tested without sockets.
//!
//! Two levels, used on their own or together:
//! - [`region`]: which regions take traffic that reached a region, as a
//!   weighted list ([`regions`]) a DNS server answers from, and the edge's
//!   per-request forwarding decision ([`target`]) drawn from that same list,
//!   both placing a client in it by the same hash of its address
//!   ([`client_draw`]);
//! - [`zone`]: inside the region, the capacity guard ([`plan`], [`may_eject`])
//!   and the zone and instance a request goes to ([`choose`]).
#![forbid(unsafe_code)]

pub mod region;
pub mod zone;

pub use region::{
    client_draw, forward_edges, region_edges, regions, target, weighted_at, AllUp, EntryPoint,
    EntryPoints, Reason, RegionHealth, Regions, Share, Target, CLIENT_PREFIX_V4, CLIENT_PREFIX_V6,
};
pub use zone::{choose, may_eject, plan, zone_weight, Backend, EjectRefusal, Mode, Plan};

//! Which region serves traffic that reached a region. A DNS server asks it
//! which regions' edges to answer a client with; an edge asks it whether to
//! serve a request or forward it. Both read the one weighted list
//! [`regions`] returns, so during an evacuation or a failover the names DNS
//! hands out and the forwarding the edges do tell the same story. Where a
//! client without a home region falls in that list is [`client_draw`] of
//! its address, the same number in both, so DNS and the edges also agree
//! on which clients a partly evacuated region keeps.

use std::net::{IpAddr, SocketAddr};

use rand::Rng;
use serde::Serialize;
use switchyard_model::{Config, Controls, Service, ServiceControls, Zone};

/// What the caller knows of each region's health, beyond the controls. A
/// region that is not up takes no traffic from others, and gives its own
/// away when another region can take it.
pub trait RegionHealth {
    fn is_up(&self, region: &str) -> bool;
}

/// For a caller that knows no region's health. An edge is one: it steers on
/// the controls alone, as it always has, and it is itself the proof that its
/// own region is up.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllUp;

impl RegionHealth for AllUp {
    fn is_up(&self, _region: &str) -> bool {
        true
    }
}

impl<F: Fn(&str) -> bool> RegionHealth for F {
    fn is_up(&self, region: &str) -> bool {
        self(region)
    }
}

/// Why a region takes its share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The region the traffic reached keeps it (all of it, or its weight).
    Local,
    /// The client names this region as its home.
    Home,
    /// The region the traffic reached is out or partly evacuated; this is
    /// the first region in the service's preference that can take the rest.
    Evacuation,
    /// The region the traffic reached should give traffic away but no other
    /// region can take it: serving there beats serving nobody.
    FailOpen,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Local => "local",
            Reason::Home => "home",
            Reason::Evacuation => "evacuation",
            Reason::FailOpen => "fail_open",
        }
    }
}

/// One region's part of the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Share<'a> {
    pub region: &'a str,
    /// Fraction of the traffic, in (0, 1]; the shares of a list add up to 1.
    pub weight: f64,
    pub reason: Reason,
}

/// Where traffic goes, as a weighted list of regions. There are never more
/// than two (the region itself and the one that takes what it gives away),
/// so the list lives inline: steering runs on every request and allocates
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Regions<'a> {
    shares: [Share<'a>; 2],
    len: usize,
}

impl<'a> Regions<'a> {
    fn one(region: &'a str, reason: Reason) -> Self {
        let s = Share {
            region,
            weight: 1.0,
            reason,
        };
        Regions {
            shares: [s, s],
            len: 1,
        }
    }

    fn split(first: Share<'a>, second: Share<'a>) -> Self {
        Regions {
            shares: [first, second],
            len: 2,
        }
    }

    pub fn as_slice(&self) -> &[Share<'a>] {
        &self.shares[..self.len]
    }

    /// Draws one region by weight; a list of one needs no draw.
    pub fn pick<R: Rng>(&self, rng: &mut R) -> Share<'a> {
        if let [only] = self.as_slice() {
            return *only;
        }
        self.pick_at(rng.gen::<f64>())
    }

    /// The region whose share covers `x` in [0, 1), shares laid end to end
    /// in list order. DNS servers and edges draw `x` with [`client_draw`],
    /// so one client gets one answer while the weights hold, the same from
    /// both, and lowering a region's weight moves only the clients above
    /// the new share.
    pub fn pick_at(&self, x: f64) -> Share<'a> {
        *weighted_at(self.as_slice(), |s| s.weight, x).expect("a list is never empty")
    }
}

/// The item whose weight covers `x`, weights laid end to end in order
/// (the last item when rounding leaves `x` past the end; `None` only for
/// an empty list). Copies of a [`Regions`] list, such as a DNS server's
/// answer table, are drawn from with this so they pick as the list does.
pub fn weighted_at<T>(items: &[T], weight: impl Fn(&T) -> f64, x: f64) -> Option<&T> {
    let mut x = x;
    for it in items {
        let w = weight(it);
        if x < w {
            return Some(it);
        }
        x -= w;
    }
    items.last()
}

/// The prefix of an IPv4 client's address it is drawn by: one household,
/// office or small network behind one NAT, and what resolvers commonly send
/// as the client subnet.
pub const CLIENT_PREFIX_V4: u8 = 24;
/// The prefix of an IPv6 client's address it is drawn by: one site's
/// delegation, and what resolvers commonly send as the client subnet.
pub const CLIENT_PREFIX_V6: u8 = 56;

/// Where a client falls in [0, 1) for `service`: the `x` of
/// [`Regions::pick_at`]. A DNS server and an edge both draw with this, so a
/// client that DNS sends to a partly evacuated region is kept there by the
/// region's edges, and one DNS sends away is forwarded away by them.
///
/// `addr/prefix` is what the caller knows of the client: a connection's
/// peer or a resolver's address (a prefix as long as the address, or
/// longer), or the client subnet a resolver sent. It is keyed by its first
/// [`CLIENT_PREFIX_V4`] or [`CLIENT_PREFIX_V6`] bits, fewer when fewer are
/// known, so every address of one /24 (or /56) draws the same, whether the
/// client is seen directly or through a resolver that sends its subnet. An IPv4 address mapped into
/// IPv6 (a dual-stack listener's view of an IPv4 client) draws as the IPv4
/// address.
///
/// FNV-1a then a SplitMix64 finaliser over the service name, the prefix
/// length and the masked address: stable across builds and platforms,
/// unlike the standard library's hasher, and allocation free.
pub fn client_draw(service: &str, addr: IpAddr, prefix: u8) -> f64 {
    let (addr, prefix) = match addr {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => (
                IpAddr::V4(v4),
                prefix.saturating_sub(96).min(CLIENT_PREFIX_V4),
            ),
            None => (addr, prefix.min(CLIENT_PREFIX_V6)),
        },
        IpAddr::V4(_) => (addr, prefix.min(CLIENT_PREFIX_V4)),
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    service.bytes().for_each(&mut eat);
    eat(0);
    eat(prefix);
    match switchyard_model::dns::mask(addr, prefix) {
        IpAddr::V4(a) => a.octets().into_iter().for_each(&mut eat),
        IpAddr::V6(a) => a.octets().into_iter().for_each(&mut eat),
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The region a DNS client is steered from: its own region (by the geo
/// map) when the service runs there, else `default_region` when the
/// service runs there, else the first of the service's preference. The
/// DNS servers answer by it and the failover preview predicts with it.
pub fn dns_from<'a>(
    service: &'a Service,
    client_region: Option<&str>,
    default_region: Option<&str>,
) -> Option<&'a str> {
    let runs = |r: &str| service.region_preference.iter().find(|p| *p == r);
    client_region
        .and_then(runs)
        .or_else(|| default_region.and_then(runs))
        .or_else(|| service.region_preference.first())
        .map(String::as_str)
}

fn region_share(sc: Option<&ServiceControls>, region: &str) -> f64 {
    sc.and_then(|c| c.regions.get(region))
        .map_or(1.0, |r| r.local_share())
}

/// Which regions take the traffic of `service` that reached region `from`
/// (an edge's own region, or the region a DNS client is nearest to), for a
/// client whose home region is `home`, if it names one.
///
/// - A home elsewhere in the service's preference takes everything, unless
///   `from` is in failover mode or the home is out or down; a home partly
///   evacuated (weight `w`) takes a share `w`, and the rest goes to the
///   first other region of the preference that is in and up, as the
///   home's own edges would send it.
/// - Otherwise `from` keeps its weight's share (none when out or down) and
///   the first region of the preference that is in and up takes the rest.
/// - When no region can take it, `from` keeps everything: steering fails
///   open rather than send users nowhere.
pub fn regions<'a>(
    service: &'a Service,
    controls: &Controls,
    from: &'a str,
    home: Option<&str>,
    health: &impl RegionHealth,
) -> Regions<'a> {
    let sc = controls.service(&service.name);
    let takes = |r: &str| health.is_up(r) && region_share(sc, r) > 0.0;
    let failover = sc
        .and_then(|c| c.regions.get(from))
        .is_some_and(|r| r.failover);
    if let Some(h) = home.filter(|h| *h != from && !failover) {
        if let Some(h) = service.region_preference.iter().find(|r| *r == h) {
            if takes(h) {
                // A home being evacuated keeps only its share of the
                // requests that name it, as its own edges would keep of
                // those that reach them; the rest goes where its own edges
                // would send it (often here). Without this, users a DNS
                // server sends away from their home during an evacuation
                // would be forwarded straight back to it.
                let share = region_share(sc, h);
                if share >= 1.0 {
                    return Regions::one(h, Reason::Home);
                }
                let next = service
                    .region_preference
                    .iter()
                    .find(|r| *r != h && takes(r));
                return match next {
                    Some(next) => Regions::split(
                        Share {
                            region: h,
                            weight: share,
                            reason: Reason::Home,
                        },
                        Share {
                            region: next,
                            weight: 1.0 - share,
                            reason: if next == from {
                                Reason::Local
                            } else {
                                Reason::Evacuation
                            },
                        },
                    ),
                    None => Regions::one(h, Reason::Home),
                };
            }
        }
    }
    let share = if health.is_up(from) {
        region_share(sc, from)
    } else {
        0.0
    };
    if share >= 1.0 {
        return Regions::one(from, Reason::Local);
    }
    let next = service
        .region_preference
        .iter()
        .find(|r| r.as_str() != from && takes(r));
    match next {
        Some(next) if share > 0.0 => Regions::split(
            Share {
                region: from,
                weight: share,
                reason: Reason::Local,
            },
            Share {
                region: next,
                weight: 1.0 - share,
                reason: Reason::Evacuation,
            },
        ),
        Some(next) => Regions::one(next, Reason::Evacuation),
        None => Regions::one(from, Reason::FailOpen),
    }
}

/// Where an edge serves one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Local,
    /// Forward to this region's edges; the reason is `Home` or `Evacuation`.
    Forward {
        region: &'a str,
        reason: Reason,
    },
}

/// An edge's decision for one request: one draw from [`regions`]. A request
/// already forwarded once is always served where it lands, so two edges
/// whose views of the controls differ for a moment can never bounce it
/// between them.
///
/// A request naming no home is drawn by its client, `client` being the
/// connection's peer address ([`client_draw`]): the clients a DNS server
/// keeps in a partly evacuated region are the ones its edges serve, every
/// request of them, and the others are forwarded as DNS would have sent
/// them. Drawn at random instead, the region would keep `w` of the requests
/// of the `w` of clients DNS sends it, `w²` in all. A request naming a home
/// is drawn at random (`rng`), as before: DNS does not know homes, so such
/// a client enters anywhere, and a home at weight `w` serves `w` of its
/// requests because every entry keeps or sends home `w` of them.
#[allow(clippy::too_many_arguments)]
pub fn target<'a, R: Rng>(
    service: &'a Service,
    controls: &Controls,
    local_region: &'a str,
    home: Option<&str>,
    client: IpAddr,
    already_forwarded: bool,
    health: &impl RegionHealth,
    rng: &mut R,
) -> Target<'a> {
    if already_forwarded {
        return Target::Local;
    }
    let list = regions(service, controls, local_region, home, health);
    let s = match (list.as_slice(), home) {
        ([only], _) => *only,
        (_, None) => list.pick_at(client_draw(&service.name, client, u8::MAX)),
        (_, Some(_)) => list.pick(rng),
    };
    match s.reason {
        Reason::Local | Reason::FailOpen => Target::Local,
        Reason::Home | Reason::Evacuation => Target::Forward {
            region: s.region,
            reason: s.reason,
        },
    }
}

/// Edges that take a region's traffic: its own zone edges, or the addresses
/// another region forwards to it through (a link, a tunnel, a load balancer).
#[derive(Debug, Clone, Copy)]
pub enum EntryPoints<'a> {
    Zones(&'a [Zone]),
    Via(&'a [SocketAddr]),
}

/// One edge address, with its zone when it is a zone's own edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryPoint<'a> {
    pub addr: SocketAddr,
    pub zone: Option<&'a str>,
}

impl<'a> EntryPoints<'a> {
    pub fn len(&self) -> usize {
        match self {
            EntryPoints::Zones(z) => z.len(),
            EntryPoints::Via(a) => a.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Indexed rather than iterated so a caller can start at a random edge
    /// and wrap around without collecting the list.
    pub fn get(&self, i: usize) -> Option<EntryPoint<'a>> {
        match self {
            EntryPoints::Zones(z) => z.get(i).map(|z| EntryPoint {
                addr: z.edge,
                zone: Some(z.name.as_str()),
            }),
            EntryPoints::Via(a) => a.get(i).map(|&addr| EntryPoint { addr, zone: None }),
        }
    }
}

/// The zone edges of `region` (none for an unknown region): what a DNS
/// server answers with for it.
pub fn region_edges<'a>(config: &'a Config, region: &str) -> EntryPoints<'a> {
    EntryPoints::Zones(config.region(region).map_or(&[], |r| &r.zones))
}

/// Where region `from`'s edges send traffic forwarded to region `to`: the
/// `forward_via` addresses `from` configures for `to` when there are any
/// (even an empty list, which means no way through), else `to`'s edges.
pub fn forward_edges<'a>(config: &'a Config, from: &str, to: &str) -> EntryPoints<'a> {
    match config.region(from).and_then(|r| r.forward_via.get(to)) {
        Some(via) => EntryPoints::Via(via),
        None => region_edges(config, to),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};
    use std::sync::LazyLock;
    use switchyard_model::{RegionControl, RegionState};

    const CONFIG: &str = r#"
[[region]]
name = "r1"
zone = [
  { name = "r1a", edge = "127.1.1.1:8080", admin = "127.1.1.1:9901" },
  { name = "r1b", edge = "127.1.2.1:8080", admin = "127.1.2.1:9901" },
]
forward_via = { r3 = ["127.9.0.1:7000"] }
[[region]]
name = "r2"
zone = [{ name = "r2a", edge = "127.2.1.1:8080", admin = "127.2.1.1:9901" }]
[[region]]
name = "r3"
zone = [{ name = "r3a", edge = "127.3.1.1:8080", admin = "127.3.1.1:9901" }]

[[service]]
name = "svc"
hosts = ["svc.local"]
min_healthy = 0.5
region_preference = ["r1", "r2", "r3"]
instance = [{ name = "i1", zone = "r1a", addr = "127.1.1.11:8081" }]
"#;

    static CFG: LazyLock<Config> = LazyLock::new(|| Config::from_toml(CONFIG, |_| None).unwrap());

    fn svc() -> &'static Service {
        CFG.service("svc").unwrap()
    }

    fn controls(regions: &[(&str, RegionControl)]) -> Controls {
        let mut c = Controls::default();
        let sc = c.services.entry("svc".into()).or_default();
        for (r, rc) in regions {
            sc.regions.insert(r.to_string(), rc.clone());
        }
        c
    }

    fn out() -> RegionControl {
        RegionControl {
            state: RegionState::Out,
            ..Default::default()
        }
    }

    fn weight(w: f64) -> RegionControl {
        RegionControl {
            weight: w,
            ..Default::default()
        }
    }

    fn failover() -> RegionControl {
        RegionControl {
            failover: true,
            ..Default::default()
        }
    }

    /// The whole list as (region, weight, reason), to compare it at once.
    fn steer(
        c: &Controls,
        from: &'static str,
        home: Option<&str>,
        health: &impl RegionHealth,
    ) -> Vec<(&'static str, f64, Reason)> {
        regions(svc(), c, from, home, health)
            .as_slice()
            .iter()
            .map(|s| (s.region, s.weight, s.reason))
            .collect()
    }

    #[test]
    fn a_region_that_is_in_keeps_its_traffic() {
        let none = Controls::default();
        assert_eq!(
            steer(&none, "r2", None, &AllUp),
            [("r2", 1.0, Reason::Local)]
        );
    }

    #[test]
    fn an_out_region_gives_everything_to_the_next_in_preference() {
        let c = controls(&[("r1", out())]);
        assert_eq!(
            steer(&c, "r1", None, &AllUp),
            [("r2", 1.0, Reason::Evacuation)]
        );
        // The next region skips every region that is out, itself included.
        let c = controls(&[("r1", out()), ("r2", out())]);
        assert_eq!(
            steer(&c, "r2", None, &AllUp),
            [("r3", 1.0, Reason::Evacuation)]
        );
    }

    #[test]
    fn a_partly_evacuated_region_keeps_its_weight_and_gives_the_rest() {
        let c = controls(&[("r1", weight(0.25))]);
        assert_eq!(
            steer(&c, "r1", None, &AllUp),
            [
                ("r1", 0.25, Reason::Local),
                ("r2", 0.75, Reason::Evacuation)
            ]
        );
        let r = regions(svc(), &c, "r1", None, &AllUp);
        let mut rng = StdRng::seed_from_u64(11);
        let n = 10_000;
        let kept = (0..n).filter(|_| r.pick(&mut rng).region == "r1").count();
        let share = kept as f64 / n as f64;
        assert!((0.22..0.28).contains(&share), "kept {share}");
    }

    #[test]
    fn a_point_picks_the_share_it_falls_in_and_lowering_a_weight_moves_only_the_excess() {
        let at = |w: f64, x: f64| {
            let c = controls(&[("r1", weight(w))]);
            regions(svc(), &c, "r1", None, &AllUp).pick_at(x).region
        };
        assert_eq!(at(0.25, 0.1), "r1");
        assert_eq!(at(0.25, 0.3), "r2");
        // Points kept at 0.5 are a superset of those kept at 0.25.
        for i in 0..100 {
            let x = i as f64 / 100.0;
            if at(0.25, x) == "r1" {
                assert_eq!(at(0.5, x), "r1", "{x}");
            }
        }
        // Past the end (rounding) falls in the last share, never panics.
        assert_eq!(at(0.25, 1.0), "r2");
        assert_eq!(at(1.0, 0.99), "r1");
    }

    #[test]
    fn when_every_region_is_out_steering_fails_open_to_the_local_one() {
        let c = controls(&[("r1", out()), ("r2", out()), ("r3", out())]);
        assert_eq!(
            steer(&c, "r1", None, &AllUp),
            [("r1", 1.0, Reason::FailOpen)]
        );
        // Half evacuated with nowhere to go: everything stays.
        let c = controls(&[("r1", weight(0.5)), ("r2", out()), ("r3", out())]);
        assert_eq!(
            steer(&c, "r1", None, &AllUp),
            [("r1", 1.0, Reason::FailOpen)]
        );
    }

    #[test]
    fn a_home_elsewhere_takes_the_traffic_unless_failover_or_out() {
        let none = Controls::default();
        let home = Some("r2");
        assert_eq!(
            steer(&none, "r1", home, &AllUp),
            [("r2", 1.0, Reason::Home)]
        );
        // The home being where the traffic already is changes nothing.
        assert_eq!(
            steer(&none, "r2", home, &AllUp),
            [("r2", 1.0, Reason::Local)]
        );
        // A home the service does not run in is ignored.
        let mars = Some("mars");
        assert_eq!(
            steer(&none, "r1", mars, &AllUp),
            [("r1", 1.0, Reason::Local)]
        );
        let c = controls(&[("r1", failover())]);
        assert_eq!(steer(&c, "r1", home, &AllUp), [("r1", 1.0, Reason::Local)]);
        let c = controls(&[("r2", out())]);
        assert_eq!(steer(&c, "r1", home, &AllUp), [("r1", 1.0, Reason::Local)]);
    }

    #[test]
    fn a_home_being_evacuated_takes_only_its_share_of_the_requests_that_name_it() {
        // r1 at a quarter: its users a DNS server sent to r2 are not all
        // forwarded back to r1, only the quarter r1's own edges would keep.
        let c = controls(&[("r1", weight(0.25))]);
        assert_eq!(
            steer(&c, "r2", Some("r1"), &AllUp),
            [("r1", 0.25, Reason::Home), ("r2", 0.75, Reason::Local)]
        );
        // From a third region the rest goes where r1's edges send theirs.
        assert_eq!(
            steer(&c, "r3", Some("r1"), &AllUp),
            [("r1", 0.25, Reason::Home), ("r2", 0.75, Reason::Evacuation)]
        );
        // Served in r1: a quarter of r1's users whichever edge they reached.
        let mut rng = StdRng::seed_from_u64(3);
        let n = 10_000;
        for from in ["r1", "r2"] {
            let r = regions(svc(), &c, from, Some("r1"), &AllUp);
            let home = (0..n).filter(|_| r.pick(&mut rng).region == "r1").count();
            let share = home as f64 / n as f64;
            assert!((0.22..0.28).contains(&share), "from {from}: {share}");
        }
        // With nowhere else to go the home keeps them all.
        let c = controls(&[("r1", weight(0.25)), ("r2", out()), ("r3", out())]);
        assert_eq!(
            steer(&c, "r2", Some("r1"), &AllUp),
            [("r1", 1.0, Reason::Home)]
        );
    }

    #[test]
    fn a_region_known_to_be_down_is_treated_as_out() {
        let none = Controls::default();
        let r2_down = |r: &str| r != "r2";
        assert_eq!(
            steer(&none, "r2", None, &r2_down),
            [("r1", 1.0, Reason::Evacuation)]
        );
        assert_eq!(
            steer(&none, "r1", Some("r2"), &r2_down),
            [("r1", 1.0, Reason::Local)]
        );
        let c = controls(&[("r1", out())]);
        assert_eq!(
            steer(&c, "r1", None, &r2_down),
            [("r3", 1.0, Reason::Evacuation)]
        );
        let all_down = |_: &str| false;
        assert_eq!(
            steer(&none, "r1", None, &all_down),
            [("r1", 1.0, Reason::FailOpen)]
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_draws_by_its_prefix_the_same_seen_directly_or_through_its_subnet() {
        let x = client_draw("svc", ip("198.51.100.7"), 32);
        assert!((0.0..1.0).contains(&x));
        // Every address of one /24, the /24 as a resolver sends it, a
        // longer subnet of it, and the address seen on a dual-stack socket.
        for (addr, prefix) in [
            ("198.51.100.200", 32),
            ("198.51.100.0", 24),
            ("198.51.100.128", 25),
            ("::ffff:198.51.100.9", 128),
            ("::ffff:198.51.100.0", 120),
        ] {
            assert_eq!(client_draw("svc", ip(addr), prefix), x, "{addr}/{prefix}");
        }
        // A subnet shorter than /24 is all that is known: drawn by that.
        assert_ne!(client_draw("svc", ip("198.51.100.0"), 16), x);
        // The next /24, and another service, draw anew.
        assert_ne!(client_draw("svc", ip("198.51.101.7"), 32), x);
        assert_ne!(client_draw("other", ip("198.51.100.7"), 32), x);
        // IPv6 by its /56.
        let y = client_draw("svc", ip("2001:db8:0:1200::1"), 128);
        assert_eq!(client_draw("svc", ip("2001:db8:0:12ff:ab::9"), 128), y);
        assert_eq!(client_draw("svc", ip("2001:db8:0:1200::"), 56), y);
        assert_ne!(client_draw("svc", ip("2001:db8:0:1300::1"), 128), y);
    }

    #[test]
    fn client_draws_spread_evenly() {
        // 20 000 consecutive /24s and /56s, as a real population is not
        // random either: each tenth of [0, 1) gets its tenth.
        for v6 in [false, true] {
            let mut tenths = [0u32; 10];
            let n = 20_000u32;
            for i in 0..n {
                let addr = if v6 {
                    IpAddr::from(std::net::Ipv6Addr::from(
                        (0x2001_0db8_u128 << 96) | (u128::from(i) << 72),
                    ))
                } else {
                    IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)))
                };
                let x = client_draw("svc", addr, 128);
                assert!((0.0..1.0).contains(&x));
                tenths[(x * 10.0) as usize] += 1;
            }
            for (t, c) in tenths.iter().enumerate() {
                let share = f64::from(*c) / f64::from(n);
                assert!(
                    (0.09..0.11).contains(&share),
                    "v6 {v6}: tenth {t} has {share}"
                );
            }
        }
    }

    #[test]
    fn the_edge_keeps_a_client_without_a_home_where_dns_would_send_it() {
        // r1 at half: the clients DNS answers with r1 (by the same draw)
        // are served at r1's edge, every request; the others forwarded.
        let c = controls(&[("r1", weight(0.5))]);
        let list = regions(svc(), &c, "r1", None, &AllUp);
        let mut rng = StdRng::seed_from_u64(7);
        let mut kept = 0;
        for i in 0..2_000u32 {
            let client = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)));
            let dns = list.pick_at(client_draw("svc", client, 24)).region;
            let mut seen =
                (0..5).map(|_| target(svc(), &c, "r1", None, client, false, &AllUp, &mut rng));
            let first = seen.next().unwrap();
            assert!(seen.all(|t| t == first), "{client} split between regions");
            match first {
                Target::Local => {
                    assert_eq!(dns, "r1", "{client}");
                    kept += 1;
                }
                Target::Forward { region, reason } => {
                    assert_eq!((region, reason), (dns, Reason::Evacuation), "{client}");
                }
            }
        }
        assert!((900..1100).contains(&kept), "kept {kept} of 2000");
        // A client naming a home is drawn per request, as before.
        let client = ip("10.9.9.9");
        let home = (0..50)
            .filter(|_| {
                target(svc(), &c, "r2", Some("r1"), client, false, &AllUp, &mut rng)
                    != Target::Local
            })
            .count();
        assert!((5..45).contains(&home), "{home} of 50 sent home");
    }

    #[test]
    fn the_edge_forwards_what_the_list_gives_away_but_never_twice() {
        let mut rng = StdRng::seed_from_u64(5);
        let client = ip("192.0.2.1");
        let mut edge = |c: &Controls, home, forwarded| {
            target(svc(), c, "r1", home, client, forwarded, &AllUp, &mut rng)
        };
        let c = controls(&[("r1", out())]);
        let evacuation = Target::Forward {
            region: "r2",
            reason: Reason::Evacuation,
        };
        assert_eq!(edge(&c, None, false), evacuation);
        assert_eq!(edge(&c, None, true), Target::Local);
        let c = controls(&[("r1", out()), ("r2", out()), ("r3", out())]);
        assert_eq!(edge(&c, None, false), Target::Local);
        let home = Target::Forward {
            region: "r3",
            reason: Reason::Home,
        };
        assert_eq!(edge(&Controls::default(), Some("r3"), false), home);
    }

    #[test]
    fn forwarding_goes_through_forward_via_where_configured() {
        let via = forward_edges(&CFG, "r1", "r3");
        assert_eq!(via.len(), 1);
        assert_eq!(
            via.get(0),
            Some(EntryPoint {
                addr: "127.9.0.1:7000".parse().unwrap(),
                zone: None
            })
        );
        assert_eq!(
            forward_edges(&CFG, "r1", "r2").get(0),
            Some(EntryPoint {
                addr: "127.2.1.1:8080".parse().unwrap(),
                zone: Some("r2a")
            })
        );
        assert_eq!(region_edges(&CFG, "r1").len(), 2);
        assert!(region_edges(&CFG, "mars").is_empty());
    }
}

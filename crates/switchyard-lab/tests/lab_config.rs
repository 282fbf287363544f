//! The config the lab writes is one its control plane starts with, and the
//! rollout settings the drills are tuned to are the ones it reads: a table
//! moved or renamed on the plane's side fails here, not halfway through a
//! drill.

use std::path::Path;

use switchyard_lab::topology::Topology;
use switchyard_model::Config;

#[test]
fn the_lab_control_plane_reads_the_rollout_settings_the_drills_are_tuned_to() {
    let topo = Topology::default_topology();
    assert!(topo.control_plane);
    let text = topo.switchyard_config("/tmp/switchyard-lab-state", Some(0.5));
    let config = Config::from_toml(&text, |_| None).unwrap_or_else(|e| panic!("{e}"));
    let s = switchyard_control::server::settings(&config, Path::new("/tmp/lab.toml"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let r = &s.rollout;
    assert_eq!(
        (r.bake_ms, r.take_timeout_ms, r.max_extra_wait_ms),
        (10_000, 10_000, 20_000)
    );
    assert_eq!((r.canary.min_requests, r.canary.min_seconds), (25, 1));
}

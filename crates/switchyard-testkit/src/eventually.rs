use std::future::Future;
use std::time::{Duration, Instant};

/// Retries `check` until it returns `Ok` or `within` has passed, then fails
/// the test with the last reason. For conditions that become true through
/// background work (ejection, reload, propagation), never for timing claims.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(()) => return,
            Err(why) if Instant::now() >= deadline => {
                panic!("{what}: still not true after {within:?}: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

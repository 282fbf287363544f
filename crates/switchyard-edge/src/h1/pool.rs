//! Read and write buffers lent to connections only while they have bytes to
//! hold, from a pool per worker thread (each worker is one single-threaded
//! runtime), and the `date` header formatted once a second per thread.
//!
//! An idle keep-alive connection holds no buffer at all: that is the whole
//! difference to hyper's HTTP/1 server, which keeps 16 KiB per connection
//! for its life.

use std::cell::RefCell;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use prometheus_client::metrics::gauge::Gauge;

/// The size a buffer is lent at. A request head of up to this size is read
/// in one system call; a longer one grows its buffer (up to the head limit)
/// and the grown buffer is not pooled again.
pub const BUF_SIZE: usize = 8 * 1024;

/// Buffers kept per thread beyond those lent out: enough for the requests
/// a worker has in flight at once, few enough that a burst does not leave
/// megabytes parked.
const POOL_MAX: usize = 64;

/// Buffers lent out and not yet given back, over every thread: what the
/// `switchyard_edge_h1_buffers_outstanding` gauge shows. Idle connections
/// hold none, so with nothing in flight it reads 0.
pub static OUTSTANDING: LazyLock<Gauge> = LazyLock::new(Gauge::default);

thread_local! {
    static READ: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static WRITE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

pub fn take_read() -> BytesMut {
    OUTSTANDING.inc();
    READ.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(BUF_SIZE))
}

pub fn give_read(mut b: BytesMut) {
    OUTSTANDING.dec();
    // Consumed bytes stay in front of a `BytesMut` until a reserve reclaims
    // them; on a buffer no one else holds, this one allocates nothing.
    b.clear();
    b.reserve(BUF_SIZE);
    if b.capacity() == BUF_SIZE {
        READ.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_MAX {
                p.push(b);
            }
        });
    }
}

pub fn take_write() -> Vec<u8> {
    OUTSTANDING.inc();
    WRITE
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(BUF_SIZE))
}

pub fn give_write(mut b: Vec<u8>) {
    OUTSTANDING.dec();
    b.clear();
    if b.capacity() == BUF_SIZE {
        WRITE.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_MAX {
                p.push(b);
            }
        });
    }
}

/// Appends the current `date` header value (RFC 9110 IMF-fixdate), formatted
/// at most once a second per thread, as hyper does.
pub fn put_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            let s = httpdate::fmt_http_date(now);
            if s.len() == 29 {
                d.1.copy_from_slice(s.as_bytes());
                d.0 = secs;
            } else {
                out.extend_from_slice(s.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&d.1);
    });
}

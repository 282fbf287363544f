//! Unix milliseconds: the one reading of the wall clock every part shares
//! (so an edge's signal, a control change and a drill's report agree on what
//! a timestamp means), and their RFC 3339 text (UTC) for payloads and reports
//! that people and other tools read: `2026-11-21T10:00:00.250Z`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch by the system clock. Code that must be
/// replayable (detection) takes the time as an argument instead; this is for
/// the callers at the edges that hand it over. A clock set before 1970 reads
/// as 0 rather than failing: timestamps are records, not invariants.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `now_ms` plus `d`, or `None` when the sum does not fit: a duration from
/// a request (a shift's lease, a silence) is added to a time only through
/// this, so an absurd one is refused instead of wrapping to a short one.
pub fn after(now_ms: u64, d: std::time::Duration) -> Option<u64> {
    u64::try_from(d.as_millis())
        .ok()
        .and_then(|d| now_ms.checked_add(d))
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2026-11-21T10:00:00.250Z`; milliseconds only when not zero.
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let (h, mi, se) = (s / 3600, s % 3600 / 60, s % 60);
    if milli == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}.{milli:03}Z")
    }
}

/// An instant as people and tools write it: Unix milliseconds (`1764670000000`)
/// or RFC 3339 (`2026-11-21T10:00:00Z`, `2026-11-21T10:00:00.250Z`, or with
/// an offset from UTC, `2026-11-21T11:00:00+01:00`). The error says which
/// forms are accepted.
pub fn parse_instant(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map_err(|e| format!("{s:?} is not a Unix time in milliseconds: {e}"));
    }
    let bad = |e: String| {
        format!(
            "{s:?} is neither Unix milliseconds nor RFC 3339 (2026-11-21T10:00:00Z or 2026-11-21T11:00:00+01:00): {e}"
        )
    };
    // humantime reads only `Z`; an offset `±HH:MM` is taken off here.
    let (utc, offset_s) = match t.len().checked_sub(6).map(|i| t.split_at(i)) {
        Some((time, off))
            if time.contains('T') && (off.starts_with('+') || off.starts_with('-')) =>
        {
            let (h, m) = off[1..]
                .split_once(':')
                .and_then(|(h, m)| Some((h.parse::<i64>().ok()?, m.parse::<i64>().ok()?)))
                .filter(|(h, m)| *h < 24 && *m < 60)
                .ok_or_else(|| bad(format!("{off:?} is not an offset ±HH:MM")))?;
            let sign = if off.starts_with('-') { -1 } else { 1 };
            (format!("{time}Z"), sign * (h * 3600 + m * 60))
        }
        _ => (t.to_string(), 0),
    };
    let at = humantime::parse_rfc3339(&utc).map_err(|e| bad(e.to_string()))?;
    let local_ms = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| format!("{s:?} is before 1970"))?;
    u64::try_from(local_ms - offset_s * 1000).map_err(|_| format!("{s:?} is before 1970"))
}

/// `2026-11-21 10:00:00 UTC`, for text meant for people.
pub fn human_utc(ms: i64) -> String {
    let t = rfc3339_ms(ms.div_euclid(1000) * 1000);
    format!("{} UTC", t.trim_end_matches('Z').replacen('T', " ", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_added_without_wrapping() {
        use std::time::Duration;
        assert_eq!(after(1_000, Duration::from_secs(1)), Some(2_000));
        assert_eq!(
            after(1_000, Duration::from_secs(2_305_843_009_213_697_552)),
            None
        );
        assert_eq!(after(u64::MAX, Duration::from_millis(1)), None);
    }

    #[test]
    fn instants_parse_from_unix_ms_and_rfc3339() {
        assert_eq!(parse_instant("1500"), Ok(1500));
        assert_eq!(parse_instant("1970-01-01T00:00:01.250Z"), Ok(1250));
        assert_eq!(
            parse_instant(&rfc3339_ms(1_764_670_000_000)),
            Ok(1_764_670_000_000)
        );
        assert_eq!(parse_instant("1970-01-01T01:00:01+01:00"), Ok(1000));
        assert_eq!(parse_instant("1970-01-01T00:30:00.500+00:30"), Ok(500));
        assert_eq!(parse_instant("1970-01-01T00:00:01-01:00"), Ok(3_601_000));
        let e = parse_instant("2026-11-21T10:00:00+25:00").unwrap_err();
        assert!(e.contains("offset"), "{e}");
        let e = parse_instant("yesterday").unwrap_err();
        assert!(e.contains("\"yesterday\"") && e.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_ms(1_795_255_200_250), "2026-11-21T10:00:00.250Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(human_utc(1_795_255_200_250), "2026-11-21 10:00:00 UTC");
    }
}

//! What the remotes reached over plain HTTP (GCS, Azure, WebDAV) share: the client
//! with its time limits, transport errors as typed remote errors, bodies
//! streamed from a blob file, and the calendar arithmetic of their dates.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;

use crate::remote::{RemoteBody, RemoteError, RemoteErrorKind, TransferProgress};

/// An HTTP client with a connect limit and a no-progress limit.
pub(crate) fn client(connect: Duration, io: Duration) -> Result<reqwest::Client, String> {
    builder(connect, io)
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// The builder [`client`] uses, for remotes that change more.
pub(crate) fn builder(connect: Duration, io: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .read_timeout(io)
}

/// A request that got no answer, as a remote error: unreachable when no
/// connection was made, retryable when it broke or timed out, with every
/// cause in the text.
pub(crate) fn transport_error(endpoint: String, e: reqwest::Error, what: &str) -> RemoteError {
    let kind = if e.is_connect() {
        RemoteErrorKind::Unreachable
    } else if e.is_timeout() || e.is_request() || e.is_body() {
        RemoteErrorKind::Retryable
    } else {
        RemoteErrorKind::Terminal
    };
    let mut detail = format!("{what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(&format!(": {s}"));
        source = s.source();
    }
    RemoteError::new(kind, endpoint, detail)
}

/// How many bytes `body` sends (a file's size read now; unknown: 0, and
/// the read that follows names the problem).
pub(crate) async fn body_len(body: &RemoteBody) -> u64 {
    match body {
        RemoteBody::Bytes(b) => b.len() as u64,
        RemoteBody::File(f) => tokio::fs::metadata(f).await.map_or(0, |m| m.len()),
        RemoteBody::Framed { head, file } => {
            head.len() as u64 + tokio::fs::metadata(file).await.map_or(0, |m| m.len())
        }
    }
}

/// A body of `lead`, then the file's bytes (streamed), then `tail`, and its
/// whole length; the bytes are reported to `progress` as the transport
/// takes them.
pub(crate) async fn file_body(
    lead: Bytes,
    file: &std::path::Path,
    tail: Bytes,
    progress: &TransferProgress,
) -> Result<(reqwest::Body, u64), String> {
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| format!("opening {}: {e}", file.display()))?;
    let size = f
        .metadata()
        .await
        .map_err(|e| format!("reading {}: {e}", file.display()))?
        .len();
    let length = lead.len() as u64 + size + tail.len() as u64;
    let mut attempt = progress.attempt();
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(lead) })
        .chain(tokio_util::io::ReaderStream::new(f))
        .chain(futures::stream::once(async move {
            Ok::<_, std::io::Error>(tail)
        }))
        .inspect(move |piece| {
            if let Ok(b) = piece {
                attempt.add(b.len() as u64);
            }
        });
    Ok((reqwest::Body::wrap_stream(stream), length))
}

/// A body as reqwest sends it (a file streamed, framed by its head), and
/// its whole length; a file's bytes are reported to `progress` as they go
/// (bytes in memory are small: not reported).
pub(crate) async fn request_body(
    body: &RemoteBody,
    progress: &TransferProgress,
) -> Result<(reqwest::Body, u64), String> {
    match body {
        RemoteBody::Bytes(b) => Ok((reqwest::Body::from(b.clone()), b.len() as u64)),
        RemoteBody::File(f) => file_body(Bytes::new(), f, Bytes::new(), progress).await,
        RemoteBody::Framed { head, file } => {
            file_body(head.clone(), file, Bytes::new(), progress).await
        }
    }
}

/// An answer's body as a streaming reader.
pub(crate) fn response_reader(resp: reqwest::Response) -> crate::remote::RemoteReader {
    use futures::TryStreamExt as _;
    let stream = resp
        .bytes_stream()
        .map_err(|e| std::io::Error::other(e.to_string()));
    Box::new(tokio_util::io::StreamReader::new(stream))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day count since 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Milliseconds since the epoch of an HTTP date.
pub(crate) fn parse_http_date(s: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut parts = s.split_whitespace().skip(1);
    let day: i64 = parts.next()?.parse().ok()?;
    let name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == name)? as i64 + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, se) = (hms.next()??, hms.next()??, hms.next()??);
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + h) * 60 + mi) * 60_000 + se * 1000)
}

/// Milliseconds since the epoch of an RFC 3339 time (`2026-12-01T10:00:00.123Z`).
pub(crate) fn rfc3339_ms(t: &str) -> Option<i64> {
    let (date, time) = t.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.trim_end_matches('Z');
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut h = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    let days = days_from_civil(y, m, day);
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        for days in [-719_468, -1, 0, 1, 11_016, 20_789, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(20_789), (2026, 12, 2));
    }
}

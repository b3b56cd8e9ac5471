//! The checks a request passes before s3s sees it, each refusing
//! something s3s would otherwise read or accept: form POSTs (PostObject,
//! which ferry does not offer; s3s reads their fields, and their file into
//! memory, before authorization), header-signed SigV2 (it can be
//! replayed forever), presigned URLs that live over 7 days; and the
//! limits s3s is given.

/// A request the front door refuses, answered with an S3 error (XML) and
/// `Connection: close`: its body is not read.
pub(crate) fn refuse<B>(req: &http::Request<B>) -> Option<http::Response<s3s::Body>> {
    let v2_header = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS "));
    if v2_header {
        // A header-signed SigV2 request carries no expiry: it could be
        // replayed forever.
        return Some(s3_error(
            http::StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
        ));
    }
    // Presigned URLs live at most 7 days: SigV4's X-Amz-Expires, and the
    // expiry time of a SigV2 one (what aws-cli v1 and boto3 presign by
    // default), whose expiry s3s checks.
    let too_long = match crate::access::query_param(req.uri(), "X-Amz-Expires") {
        Some(e) => e.parse::<u64>().map_or(true, |e| e > MAX_EXPIRES),
        None => {
            crate::access::query_param(req.uri(), "Signature").is_some()
                && crate::access::query_param(req.uri(), "Expires").is_some_and(|e| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs();
                    e.parse::<u64>()
                        .map_or(true, |e| e > now.saturating_add(MAX_EXPIRES))
                })
        }
    };
    if too_long {
        return Some(s3_error(
            http::StatusCode::BAD_REQUEST,
            "AuthorizationQueryParametersError",
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        ));
    }
    if req.method() == http::Method::POST && is_form(req.headers()) {
        return Some(s3_error(
            http::StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "browser form uploads (POST object) are not offered: use PUT, or a presigned PUT URL",
        ));
    }
    None
}

/// Marks a request whose body's length only its end tells (`Transfer-
/// Encoding: chunked`, no `Content-Length`): an upload S3 clients that
/// stream from a pipe send. s3s refuses one signed `UNSIGNED-PAYLOAD`
/// (it wants a length), although nothing in it needs one: the length is
/// given as 0 to s3s and the request carries [`LengthUnknown`], so the
/// operations take the body to its end and check no length. A body
/// signed whole (`x-amz-content-sha256: <hash>`) still needs its length:
/// s3s verifies the hash against exactly that many bytes.
pub(crate) fn length_unknown(req: &mut http::Request<s3s::Body>) {
    let h = req.headers();
    let chunked = h.get_all(http::header::TRANSFER_ENCODING).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"))
    });
    let unsigned = h
        .get("x-amz-content-sha256")
        .is_some_and(|v| v.as_bytes() == b"UNSIGNED-PAYLOAD");
    if req.method() == http::Method::PUT
        && chunked
        && unsigned
        && !h.contains_key(http::header::CONTENT_LENGTH)
    {
        req.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from_static("0"),
        );
        req.extensions_mut().insert(LengthUnknown);
    }
}

/// A request whose `Content-Length` the front door made up (see
/// [`length_unknown`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LengthUnknown;

/// The longest a presigned URL may live, as on AWS: 7 days.
const MAX_EXPIRES: u64 = 7 * 24 * 3600;

fn is_form(headers: &http::HeaderMap) -> bool {
    headers.get_all(http::header::CONTENT_TYPE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
    })
}

/// An S3 error answer.
pub(crate) fn s3_error(
    status: http::StatusCode,
    code: &str,
    message: &str,
) -> http::Response<s3s::Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message></Error>",
        xml_escape(message)
    );
    let mut r = http::Response::new(s3s::Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    r
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The limits s3s works within, set rather than left to its defaults:
/// XML bodies (DeleteObjects of 1,000 keys of 1,024 bytes, a
/// CompleteMultipartUpload of 10,000 parts) fit in 4 MiB; form uploads are
/// refused before s3s (see [`refuse`]), so their limits are the least
/// s3s takes.
pub(crate) fn s3s_limits() -> s3s::config::S3Config {
    let mut c = s3s::config::S3Config::default();
    c.xml_max_body_size = 4 << 20;
    c.post_object_max_file_size = 0;
    c.form_max_field_size = 1 << 10;
    c.form_max_fields_size = 4 << 10;
    c.form_max_parts = 4;
    c.presigned_url_max_skew_time_secs = 900;
    c.normalize_forward_slash_path = false;
    c
}

/// Which bucket names s3s routes: S3's rules, and the one served bucket's
/// name whatever it is (a folder `v3` is served as `v3`, the name a user
/// guesses, although S3 names have 3 characters at least).
pub(crate) struct Names {
    pub(crate) served: Option<String>,
}

impl s3s::validation::NameValidation for Names {
    fn validate_bucket_name(&self, name: &str) -> bool {
        s3s::path::check_bucket_name(name) || self.served.as_deref() == Some(name)
    }
}

/// Whether `req` names a host this gateway answers to: an IP address,
/// `localhost`, or one of `allowed` (`*`: any). A request naming none
/// (HTTP/1.0) is answered.
pub(crate) fn host_allowed<B>(allowed: &[String], req: &http::Request<B>) -> bool {
    let named = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    let Some(named) = named else { return true };
    let Ok(authority) = named.parse::<http::uri::Authority>() else {
        return false;
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.parse::<std::net::IpAddr>().is_ok()
        || host.eq_ignore_ascii_case("localhost")
        || allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(host))
}

/// Whether `req` carries no signature (a public or anonymous read).
pub(crate) fn unsigned<B>(req: &http::Request<B>) -> bool {
    !req.headers().contains_key(http::header::AUTHORIZATION)
        && crate::access::query_param(req.uri(), "X-Amz-Signature").is_none()
}

/// What every answer tells a browser: never guess a content type; and
/// for an unsigned read of an active type (HTML, SVG, XML), run it
/// sandboxed, so an uploaded page cannot act as the gateway's origin.
pub(crate) fn browser_headers(resp: &mut http::Response<s3s::Body>, unsigned: bool) {
    let h = resp.headers_mut();
    h.insert(
        "x-content-type-options",
        http::HeaderValue::from_static("nosniff"),
    );
    let active = h
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| {
            matches!(
                t.as_str(),
                "text/html"
                    | "application/xhtml+xml"
                    | "image/svg+xml"
                    | "text/xml"
                    | "application/xml"
            )
        });
    if unsigned && active {
        h.insert(
            http::header::CONTENT_SECURITY_POLICY,
            http::HeaderValue::from_static(
                "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:",
            ),
        );
    }
}

//! What every engine's monitoring connection shares: its options, and the decoding of a URL
//! parameter's value. Engine-neutral: each engine (and the PgBouncer console) imports it from here.

use std::time::Duration;

/// The name poolwarden's own connections carry (PostgreSQL's `application_name`, MySQL's
/// `program_name` connection attribute). Sessions carrying it are never terminated.
pub const APPLICATION_NAME: &str = "poolwarden";

/// Settings of the monitoring connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnectOptions {
    pub statement_timeout: Duration,
    pub connect_timeout: Duration,
    pub keepalive_idle: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            keepalive_idle: Duration::from_secs(30),
        }
    }
}

/// Decodes `%XX` escapes (a URL parameter's value); anything else is kept as it is.
pub fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        if bytes[i] == b'%'
            && let Some(Ok(b)) = hex.map(|h| u8::from_str_radix(h, 16))
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

//! Reading bodies without ever buffering more than a limit.

use crate::Error;

/// The body of `response`, chunk by chunk, failing with [`Error::TooLarge`] as soon as it is
/// longer than `limit` bytes (at once when its `Content-Length` says so), or with
/// [`Error::Transport`] when the connection fails (or the request's timeout passes) before its end.
pub async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, Error> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(Error::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Error::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(Error::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first `max` bytes of a body, or what could be read of them before the connection failed;
/// the rest is not read. For error answers, whose status alone decides what happens next.
pub async fn read_prefix(mut response: reqwest::Response, max: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = max - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= max {
            break;
        }
    }
    body
}

//! Bearer tokens at the HTTP edge: who is calling, and which namespace that
//! fixes.
//!
//! With `--auth required`, or once any usable token exists (`auto`), every
//! request to `/mcp` and `/metrics` needs `Authorization: Bearer <token>`.
//! Missing, unknown, expired or revoked tokens get 401 with a
//! `WWW-Authenticate` challenge pointing at the OAuth 2.0 Protected Resource
//! Metadata (RFC 9728) served at `/.well-known/oauth-protected-resource`. A
//! valid token becomes a [`Grant`] in the request's extensions; the MCP
//! handler binds the session to it. Tokens are looked up on every request, so
//! a revocation counts at the next one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::{self, Grant, Scope};
use crate::metrics::metrics;
use crate::model::now_micros;
use crate::store::Store;

use super::handler::NAMESPACE_HEADER;

/// When HTTP requests need a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Once any token was made (`engram token create`), even after every
    /// one is revoked or expired.
    #[default]
    Auto,
    /// Always: with no token made yet, every request is refused.
    Required,
    /// Never (`--insecure-no-auth`): anyone who reaches the port is the owner.
    Off,
}

/// Where RFC 9728 metadata is served.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
/// A token's `last_used_at` is written at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// The token check in front of `/mcp` and `/metrics`.
#[derive(Clone)]
pub struct Gate {
    store: Store,
    mode: AuthMode,
    touched: Arc<Mutex<HashMap<String, Instant>>>,
}

/// Why a request was turned away, as the client hears it.
pub struct Refusal {
    status: StatusCode,
    /// RFC 6750 error code; none when no token was sent.
    error: Option<&'static str>,
    message: String,
}

impl Gate {
    pub fn new(store: Store, mode: AuthMode) -> Gate {
        Gate {
            store,
            mode,
            touched: Arc::default(),
        }
    }

    /// The grant a request's token gives, none when tokens are not needed, or
    /// why the request is refused.
    pub async fn check(&self, headers: &HeaderMap) -> Result<Option<Grant>, Refusal> {
        if self.mode == AuthMode::Off {
            return Ok(None);
        }
        let Some(presented) = bearer(headers) else {
            if self.mode == AuthMode::Auto && !self.tokens_made().await? {
                return Ok(None);
            }
            return Err(refuse(
                "missing",
                None,
                "this server needs a token: send \
                 `Authorization: Bearer <token>` (an operator makes one with `engram token create`)",
            ));
        };
        let grant = self.grant_for(presented).await?;
        let asked = headers
            .get(NAMESPACE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        if let Some(asked) = asked
            && asked != grant.namespace
            && grant.scope != Scope::Admin
        {
            metrics().auth_failure("namespace");
            return Err(Refusal {
                status: StatusCode::FORBIDDEN,
                error: Some("insufficient_scope"),
                message: format!(
                    "this token ({:?}) is bound to namespace {:?}; the {NAMESPACE_HEADER} header \
                     names {asked:?}: drop the header, or use an admin token",
                    grant.label, grant.namespace
                ),
            });
        }
        self.touch(&grant.token_id);
        Ok(Some(grant))
    }

    async fn tokens_made(&self) -> Result<bool, Refusal> {
        self.store.tokens_made().await.map_err(|e| unavailable(&e))
    }

    async fn grant_for(&self, presented: &str) -> Result<Grant, Refusal> {
        let invalid = || refuse("invalid", Some("invalid_token"), "the token is not valid");
        let (id, secret) = auth::parse(presented).ok_or_else(invalid)?;
        let (token, hash) = self
            .store
            .token(id)
            .await
            .map_err(|e| unavailable(&e))?
            .ok_or_else(invalid)?;
        if !auth::secret_matches(secret, &hash) {
            return Err(invalid());
        }
        if let Some(why) = token.unusable(now_micros()) {
            return Err(refuse(
                why,
                Some("invalid_token"),
                &format!("the token {:?} is {why}: ask for a new one", token.label),
            ));
        }
        Ok(Grant {
            token_id: token.id,
            label: token.label,
            namespace: token.namespace,
            scope: token.scope,
        })
    }

    /// Records the token's use, at most once a minute, off the request's path.
    fn touch(&self, id: &str) {
        let now = Instant::now();
        {
            let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            if touched
                .get(id)
                .is_some_and(|last| now.duration_since(*last) < TOUCH_EVERY)
            {
                return;
            }
            touched.insert(id.to_string(), now);
        }
        let (store, id) = (self.store.clone(), id.to_string());
        tokio::spawn(async move {
            if let Err(e) = store.touch_token(&id, now_micros()).await {
                tracing::debug!(error = %e, "cannot note a token's last use");
            }
        });
    }
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn refuse(reason: &'static str, error: Option<&'static str>, message: &str) -> Refusal {
    metrics().auth_failure(reason);
    Refusal {
        status: StatusCode::UNAUTHORIZED,
        error,
        message: message.to_string(),
    }
}

fn unavailable(e: &crate::store::StoreError) -> Refusal {
    tracing::warn!(error = %e, "cannot read the tokens");
    Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        error: None,
        message: "engram cannot check tokens right now (its store is failing): retry shortly"
            .into(),
    }
}

impl Refusal {
    /// The answer, with the challenge that tells clients where to learn how to
    /// authenticate.
    pub fn into_response(self, headers: &HeaderMap) -> Response {
        let plain = format!(
            "Bearer realm=\"engram\", resource_metadata=\"{}\"",
            metadata_url(headers)
        );
        let challenge = match self.error {
            Some(error) => {
                let description = self.message.replace(['"', '\\'], "'");
                format!("{plain}, error=\"{error}\", error_description=\"{description}\"")
            }
            None => plain.clone(),
        };
        let mut response = (
            self.status,
            Json(json!({ "error": self.error.unwrap_or("unauthorized"), "message": self.message })),
        )
            .into_response();
        // A message a header cannot carry loses its description, not the challenge.
        let value = HeaderValue::from_str(&challenge).or_else(|_| HeaderValue::from_str(&plain));
        if matches!(
            self.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) && let Ok(value) = value
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// This server's origin as the client reached it (a TLS proxy in front says
/// so with `X-Forwarded-Proto`).
fn origin(headers: &HeaderMap) -> String {
    // The edge checked the host's name, not its port: only a host:port shape
    // goes into the URL (and from there into a quoted header parameter).
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        })
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

/// The metadata of the protected resource `/mcp` (RFC 9728 §3.1: the
/// resource's path follows the well-known name).
fn metadata_url(headers: &HeaderMap) -> String {
    format!("{}{METADATA_PATH}/mcp", origin(headers))
}

/// OAuth 2.0 Protected Resource Metadata (RFC 9728) for `/mcp`: tokens go in
/// the `Authorization` header; engram issues them itself (`engram token
/// create`), so no authorization server is named.
pub fn resource_metadata(headers: &HeaderMap) -> serde_json::Value {
    json!({
        "resource": format!("{}/mcp", origin(headers)),
        "resource_name": "engram",
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["read", "write", "admin"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_url_takes_only_a_host_shaped_host() {
        let with = |host: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, host.parse().unwrap());
            metadata_url(&h)
        };
        assert_eq!(
            with("127.0.0.1:8765"),
            "http://127.0.0.1:8765/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            with("localhost:\"x, error=\"y"),
            "http://localhost/.well-known/oauth-protected-resource/mcp"
        );
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            bearer(&h).map(str::to_string)
        };
        assert_eq!(with("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("bearer  abc ").as_deref(), Some("abc"));
        assert_eq!(with("Basic abc"), None);
        assert_eq!(with("Bearer "), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}

//! The signature calls of the manager API (`docs/openapi.json`): `GET /api/v1/signatures`
//! (the current database's version, digest and files) and `GET /api/v1/signatures/bundle` (its
//! files as one tar archive). One attempt each: a daemon appliance asks again before its next
//! job anyway.

use std::io::Read as _;

use serde::Deserialize;

use super::{error_message, ClientError, ManagerClient};

/// The manager's current signature database.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SignatureSet {
    /// The version the administrator gave it.
    pub version: String,
    /// The database digest (what a scanner that loads exactly these files reports).
    pub sha256: String,
    /// Total bytes of its files.
    pub size: u64,
    /// Its files.
    pub files: Vec<SignatureFileInfo>,
}

/// One file of a set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SignatureFileInfo {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of its bytes.
    pub sha256: String,
}

impl ManagerClient {
    /// `GET /api/v1/signatures`: the current set, or `None` when the manager holds none (404).
    pub fn signatures(&self) -> Result<Option<SignatureSet>, ClientError> {
        const WHAT: &str = "signature database query";
        let (status, body) = self.get(WHAT, "/api/v1/signatures", super::MAX_ANSWER_BYTES)?;
        match status {
            200 => super::decode(WHAT, &body).map(Some),
            404 => Ok(None),
            s => Err(refused(WHAT, s, &body)),
        }
    }

    /// `GET /api/v1/signatures/bundle`: the current set's tar archive, at most `limit` bytes
    /// (a longer answer is an error, never a truncated bundle).
    pub fn signature_bundle(&self, limit: u64) -> Result<Vec<u8>, ClientError> {
        const WHAT: &str = "signature download";
        let (status, body) = self.get(WHAT, "/api/v1/signatures/bundle", limit)?;
        match status {
            200 => Ok(body),
            s => Err(refused(WHAT, s, &body)),
        }
    }

    /// One GET; the body is read up to `limit` bytes (more is a protocol error).
    fn get(
        &self,
        what: &'static str,
        path: &str,
        limit: u64,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let url = format!("{}{path}", self.base);
        let mut response = self
            .agent
            .get(&url)
            .header("Authorization", &self.authorization)
            .call()
            .map_err(|e| ClientError::Unreachable {
                url: url.clone(),
                attempts: 1,
                detail: e.to_string(),
            })?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        response
            .body_mut()
            .with_config()
            .limit(limit.saturating_add(1))
            .reader()
            .take(limit.saturating_add(1))
            .read_to_end(&mut body)
            .map_err(|e| ClientError::Unreachable {
                url: url.clone(),
                attempts: 1,
                detail: format!("reading the answer: {e}"),
            })?;
        if body.len() as u64 > limit {
            return Err(ClientError::Protocol {
                what,
                detail: format!("the answer is over {limit} bytes"),
            });
        }
        Ok((status, body))
    }
}

fn refused(what: &'static str, status: u16, body: &[u8]) -> ClientError {
    if status == 429 || status >= 500 {
        ClientError::Failing {
            what,
            status,
            attempts: 1,
            message: error_message(body),
        }
    } else {
        ClientError::Refused {
            what,
            status,
            message: error_message(body),
        }
    }
}

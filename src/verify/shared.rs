//! Entries that ask the registry the same question (the same reference, architecture and
//! credentials) share one answer: a success serves later askers for a window, a failure only
//! those who asked while it was in flight, so that a recovered registry is seen at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::secrets::RegistryAuth;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::inspect::{Failure, Inspection};

/// Answers kept before the stale ones are swept.
const SWEEP_AT: usize = 4096;

/// One registry answer, shared by the entries that asked the same question.
pub type Answer = Arc<OnceCell<(Instant, Result<Inspection, Failure>)>>;

pub struct SharedAnswers {
    window: Duration,
    answers: Mutex<HashMap<[u8; 32], Answer>>,
}

impl SharedAnswers {
    pub fn new(window: Duration) -> SharedAnswers {
        SharedAnswers {
            window,
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// The answer to the question `key` names: still fresh, or a new one to fill.
    pub fn answer(&self, key: [u8; 32]) -> Answer {
        let mut answers = self.answers.lock().expect("shared answers lock");
        let window = self.window;
        let fresh = |cell: &Answer| {
            cell.get()
                .is_none_or(|(at, result)| result.is_ok() && at.elapsed() < window)
        };
        // Stale answers of other questions are swept only once they pile up, not per check.
        if answers.len() >= SWEEP_AT {
            answers.retain(|_, cell| fresh(cell));
        }
        let cell = answers.entry(key).or_default();
        if !fresh(cell) {
            *cell = Answer::default();
        }
        cell.clone()
    }
}

/// Identifies credentials without keeping them in clear.
pub fn credentials_key(auth: &RegistryAuth) -> [u8; 32] {
    let text = match auth {
        RegistryAuth::Anonymous => "anonymous".to_string(),
        RegistryAuth::Basic(user, password) => format!("basic\0{user}\0{password}"),
        RegistryAuth::Bearer(token) => format!("bearer\0{token}"),
    };
    Sha256::digest(text.as_bytes()).into()
}

/// The question entries with this reference, architecture and credentials ask.
pub fn question(reference: &str, architecture: Option<&str>, credentials: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(reference.as_bytes());
    hasher.update([0]);
    hasher.update(architecture.unwrap_or_default().as_bytes());
    hasher.update([0]);
    hasher.update(credentials);
    hasher.finalize().into()
}

//! Connecting a remote: the probe, the layers (emulation, retry, encryption)
//! and the mode check.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::bucket::Bucket;
use crate::error::{Error, Result};
use crate::remote::emulated::{probe, Emulated, ProbeResult};
use crate::remote::encrypted::Encrypted;
use crate::remote::retry::{RetryPolicy, Retrying};
use crate::remote::spec::Credentials;
use crate::remote::SharedRemote;

impl Bucket {
    /// Builds the recorded remote with `creds` and connects to it.
    pub async fn connect(&self, creds: &Credentials) -> Result<ProbeResult> {
        let spec = self.remote_spec()?.ok_or(Error::NoRemote)?;
        let remote = spec.build_with(creds, self.sync_config()?.timeouts())?;
        self.attach(remote).await
    }

    /// Connects a remote (any implementation). On first contact with an
    /// endpoint, probes whether it enforces conditional writes and records
    /// the answer; a store that does not gets them emulated by HEAD.
    ///
    /// The remote's encryption mode must match the bucket's (an encrypted
    /// bucket claims an empty remote by writing its key file); an encrypted
    /// bucket must be unlocked.
    pub async fn attach(&self, remote: SharedRemote) -> Result<ProbeResult> {
        let keys = self.keyring()?;
        self.check_remote_mode(remote.as_ref()).await?;
        let endpoint = remote.endpoint();
        let mut probes: BTreeMap<String, ProbeResult> =
            self.setting_json("probes")?.unwrap_or_default();
        let config = self.sync_config()?;
        let retry = RetryPolicy {
            max_retries: config.max_retries,
            base_delay: Duration::from_millis(config.retry_base_delay_ms),
            // A request that failed only after the no-progress limit met a
            // store that does not answer: waiting that long again helps nobody.
            stall: Some(config.timeouts().io),
            ..RetryPolicy::default()
        };
        let found = match probes.get(&endpoint) {
            // Probed before the second write path was: probed again.
            Some(p) if p.conditional_multipart.is_some() => *p,
            _ => {
                let retrying = Retrying::new(remote.clone(), retry);
                let p = probe(&retrying, self.device_id()).await?;
                probes.insert(endpoint, p);
                self.set_setting_json("probes", &probes).await?;
                p
            }
        };
        let mut layered = remote;
        let multipart_ignored = found.conditional_multipart == Some(false);
        if !found.conditional_put || !found.conditional_delete || multipart_ignored {
            layered = Arc::new(
                Emulated::new(layered, !found.conditional_put, !found.conditional_delete)
                    .emulating_multipart(multipart_ignored),
            );
        }
        let base: SharedRemote = Arc::new(Retrying::new(layered.clone(), retry));
        let full: SharedRemote = match keys {
            Some(k) => Arc::new(Retrying::new(Arc::new(Encrypted::new(layered, k)), retry)),
            None => base.clone(),
        };
        if let Ok(mut r) = self.inner.remote.write() {
            *r = Some(full);
        }
        if let Ok(mut r) = self.inner.base_remote.write() {
            *r = Some(base);
        }
        Ok(found)
    }

    /// The connected remote without the encryption layer (for `.ferry/`).
    pub(crate) fn raw_remote(&self) -> Result<SharedRemote> {
        self.inner
            .base_remote
            .read()
            .ok()
            .and_then(|r| r.clone())
            .ok_or(Error::NoRemote)
    }

    pub(super) fn connected_remote(&self) -> Result<SharedRemote> {
        self.inner
            .remote
            .read()
            .ok()
            .and_then(|r| r.clone())
            .ok_or(Error::NoRemote)
    }
}

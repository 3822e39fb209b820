//! One identity per controller, as kube-controller-manager's
//! `--use-service-account-credentials`: each controller acts as the
//! ServiceAccount `kube-system/<controller>` (bound by the bootstrap policy
//! to `system:controller:<controller>`), with a token the controller
//! manager requests for it (TokenRequest, one hour) and renews at 80 % of
//! its life into a file only its owner reads; the controller's client
//! re-reads that file every minute (kube-rs's token-file auth).

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::Error;

/// Lifetime of a controller's token.
const TOKEN_SECONDS: i64 = 3600;

/// Where controllers' credentials come from.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The controller manager's kubeconfig (the server and its CA).
    pub kubeconfig: PathBuf,
    /// Where the token files are kept (made 0700).
    pub dir: PathBuf,
}

async fn request_token(manager: &kube::Client, name: &str) -> Result<String, Error> {
    let api: Api<ServiceAccount> = Api::namespaced(manager.clone(), "kube-system");
    let req = TokenRequest { spec: TokenRequestSpec { expiration_seconds: Some(TOKEN_SECONDS), ..Default::default() }, ..Default::default() };
    let got = api.create_token_request(name, &PostParams::default(), &req).await?;
    got.status.map(|s| s.token).filter(|t| !t.is_empty()).ok_or_else(|| Error::Invalid(format!("the token request for {name} answered no token")))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    std::fs::rename(&tmp, path)
}

impl Credentials {
    /// A client acting as the controller's ServiceAccount (made if
    /// missing), its token kept fresh until `shutdown`.
    pub async fn client_for(&self, manager: &kube::Client, controller: &str, mut shutdown: watch::Receiver<bool>) -> Result<kube::Client, Error> {
        let io = |e: std::io::Error| Error::Invalid(format!("{}: {e}", self.dir.display()));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).map_err(io)?;
        }
        let accounts: Api<ServiceAccount> = Api::namespaced(manager.clone(), "kube-system");
        if accounts.get_opt(controller).await?.is_none() {
            let sa = ServiceAccount { metadata: kube::api::ObjectMeta { name: Some(controller.into()), ..Default::default() }, ..Default::default() };
            match accounts.create(&PostParams::default(), &sa).await {
                Ok(_) => {}
                Err(e) if crate::util::is_conflict(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let path = self.dir.join(format!("{controller}.token"));
        write_private(&path, &request_token(manager, controller).await?).map_err(io)?;
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.map_err(|e| Error::Invalid(e.to_string()))?;
        cfg.auth_info = kube::config::AuthInfo { token_file: Some(path.display().to_string()), ..Default::default() };
        let client = kube::Client::try_from(cfg)?;
        let (manager, name) = (manager.clone(), controller.to_string());
        tokio::spawn(async move {
            let mut every = Duration::from_secs((TOKEN_SECONDS as u64) * 8 / 10);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                match request_token(&manager, &name).await.map(|t| write_private(&path, &t)) {
                    Ok(Ok(())) => every = Duration::from_secs((TOKEN_SECONDS as u64) * 8 / 10),
                    other => {
                        tracing::warn!(controller = %name, result = ?other.map(|_| ()), "renewing a controller's token failed; retrying in 10 s");
                        every = Duration::from_secs(10);
                    }
                }
            }
        });
        Ok(client)
    }
}

//! Running `nft`: each transaction is one `nft -f -` run, which the kernel
//! applies atomically or not at all.

use tokio::io::AsyncWriteExt;

/// Why a transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be run.
    #[error("running nft: {0}")]
    Spawn(#[from] std::io::Error),
    /// `nft` refused the transaction.
    #[error("nft: {0}")]
    Refused(String),
}

/// Applies `script` as one transaction.
pub async fn apply(script: &str) -> Result<(), NftError> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if out.status.success() {
        Ok(())
    } else {
        // The first lines say which command and why; the rest repeat it.
        let msg: String = String::from_utf8_lossy(&out.stderr).lines().take(3).collect::<Vec<_>>().join(" | ");
        Err(NftError::Refused(msg))
    }
}

/// Deletes `ip TABLE` if it exists, and nothing else.
pub async fn delete_table(table: &str) -> Result<(), NftError> {
    apply(&format!("add table ip {table}\ndelete table ip {table}\n")).await
}

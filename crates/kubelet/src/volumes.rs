//! Pod volumes materialized on the node: `emptyDir` (tmpfs for `medium:
//! Memory`), `configMap`, `secret`, `downwardAPI` and `projected` as files
//! (rewritten at every sync, so updates reach running containers), `hostPath`,
//! and `persistentVolumeClaim` as the directory of the volume it is bound to
//! (a local-path volume under the node's `storage/`). A projected
//! `serviceAccountToken` is a TokenRequest bound to the pod, fetched again
//! once 80 % of its life has passed, as the kubelet's token manager does.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume};
use kube::api::Api;

/// Why a volume could not be set up (the `FailedMount` event's message).
#[derive(Debug, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume \"{volume}\" : {message}")]
pub struct MountError {
    /// The volume.
    pub volume: String,
    /// Why.
    pub message: String,
}

/// Where each of a pod's volumes is on the host.
pub type HostPaths = HashMap<String, PathBuf>;

/// Sets up every volume of `pod` under `pod_dir` and returns their host paths.
pub async fn prepare(client: &kube::Client, pod: &Pod, pod_dir: &Path) -> Result<HostPaths, MountError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = HostPaths::new();
    for v in pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        let err = |message: String| MountError { volume: v.name.clone(), message };
        let path = setup(client, pod, &ns, v, pod_dir).await.map_err(err)?;
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

async fn setup(client: &kube::Client, pod: &Pod, ns: &str, v: &Volume, pod_dir: &Path) -> Result<PathBuf, String> {
    let dir = |kind: &str| pod_dir.join("volumes").join(kind).join(&v.name);
    let io = |e: std::io::Error| e.to_string();
    if let Some(hp) = &v.host_path {
        let p = PathBuf::from(&hp.path);
        match hp.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => std::fs::create_dir_all(&p).map_err(io)?,
            "FileOrCreate" if !p.exists() => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                std::fs::write(&p, b"").map_err(io)?;
            }
            "Directory" if !p.is_dir() => return Err(format!("hostPath type check failed: {} is not a directory", hp.path)),
            "File" if !p.is_file() => return Err(format!("hostPath type check failed: {} is not a file", hp.path)),
            _ => {}
        }
        return Ok(p);
    }
    if let Some(ed) = &v.empty_dir {
        let p = dir("kubernetes.io~empty-dir");
        std::fs::create_dir_all(&p).map_err(io)?;
        if ed.medium.as_deref() == Some("Memory") && !is_mountpoint(&p) {
            let size = ed.size_limit.as_ref().and_then(|q| skiff_runtime::quantity::value(&q.0)).map(|b| format!(",size={b}")).unwrap_or_default();
            nix::mount::mount(Some("tmpfs"), &p, Some("tmpfs"), nix::mount::MsFlags::empty(), Some(format!("mode=0777{size}").as_str()))
                .map_err(|e| format!("mounting tmpfs at {}: {e}", p.display()))?;
        }
        return Ok(p);
    }
    if let Some(pvc) = &v.persistent_volume_claim {
        let p = claimed_path(client, ns, &pvc.claim_name).await?;
        std::fs::create_dir_all(&p).map_err(io)?;
        return Ok(p);
    }
    let mut files: BTreeMap<String, (Vec<u8>, i32)> = BTreeMap::new();
    let kind = if let Some(cm) = &v.config_map {
        let name = cm.name.clone();
        add_keys(client, Source::ConfigMap, ns, &name, cm.items.as_deref(), cm.default_mode.unwrap_or(0o644), cm.optional.unwrap_or(false), &mut files).await?;
        "kubernetes.io~configmap"
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        add_keys(client, Source::Secret, ns, &name, s.items.as_deref(), s.default_mode.unwrap_or(0o644), s.optional.unwrap_or(false), &mut files).await?;
        "kubernetes.io~secret"
    } else if let Some(d) = &v.downward_api {
        add_downward(pod, d.items.as_deref().unwrap_or_default(), d.default_mode.unwrap_or(0o644), &mut files);
        "kubernetes.io~downward-api"
    } else if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(0o644);
        for src in p.sources.iter().flatten() {
            if let Some(cm) = &src.config_map {
                add_keys(client, Source::ConfigMap, ns, &cm.name, cm.items.as_deref(), mode, cm.optional.unwrap_or(false), &mut files).await?;
            }
            if let Some(s) = &src.secret {
                add_keys(client, Source::Secret, ns, &s.name, s.items.as_deref(), mode, s.optional.unwrap_or(false), &mut files).await?;
            }
            if let Some(d) = &src.downward_api {
                add_downward(pod, d.items.as_deref().unwrap_or_default(), mode, &mut files);
            }
            if let Some(t) = &src.service_account_token {
                let token = service_account_token(client, pod, t.audience.as_deref(), t.expiration_seconds.unwrap_or(3600)).await?;
                files.insert(t.path.clone(), (token.into_bytes(), p.default_mode.unwrap_or(0o644)));
            }
        }
        "kubernetes.io~projected"
    } else {
        // Unsupported sources get an empty directory rather than failing the pod.
        let p = dir("kubernetes.io~empty-dir");
        std::fs::create_dir_all(&p).map_err(io)?;
        return Ok(p);
    };
    let p = dir(kind);
    write_files(&p, &files).map_err(io)?;
    Ok(p)
}

/// Tokens handed out to pods, by (pod uid, audience, life): the token and
/// when it must be fetched again.
type TokenCache = std::sync::Mutex<HashMap<(String, String, i64), (String, std::time::Instant)>>;

fn tokens() -> &'static TokenCache {
    static TOKENS: std::sync::OnceLock<TokenCache> = std::sync::OnceLock::new();
    TOKENS.get_or_init(Default::default)
}

/// Forgets the tokens of a pod that is gone.
pub fn forget_tokens(pod_uid: &str) {
    tokens().lock().unwrap_or_else(|e| e.into_inner()).retain(|(uid, _, _), _| uid != pod_uid);
}

/// A token of the pod's ServiceAccount, bound to the pod: the one cached
/// until 80 % of its life has passed, then a new one.
async fn service_account_token(client: &kube::Client, pod: &Pod, audience: Option<&str>, life: i64) -> Result<String, String> {
    use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let key = (uid.clone(), audience.unwrap_or_default().to_string(), life);
    if let Some((token, renew_at)) = tokens().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        if std::time::Instant::now() < *renew_at {
            return Ok(token.clone());
        }
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
            expiration_seconds: Some(life),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: Some(uid),
            }),
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let got = api.create_token_request(&sa, &Default::default(), &req).await.map_err(|e| format!("failed to fetch token: {e}"))?;
    let token = got.status.map(|s| s.token).filter(|t| !t.is_empty()).ok_or("failed to fetch token: the answer holds none")?;
    let renew_at = std::time::Instant::now() + std::time::Duration::from_secs((life.max(0) as u64) * 8 / 10);
    tokens().lock().unwrap_or_else(|e| e.into_inner()).insert(key, (token.clone(), renew_at));
    Ok(token)
}

/// The directory of the volume a claim is bound to: the PersistentVolume's
/// `hostPath` or `local` path (what the local-path provisioner makes). An
/// unbound claim is a mount failure, retried until the binder is done.
async fn claimed_path(client: &kube::Client, ns: &str, claim: &str) -> Result<PathBuf, String> {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let claims: kube::Api<PersistentVolumeClaim> = kube::Api::namespaced(client.clone(), ns);
    let pvc = claims.get_opt(claim).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
    let Some(volume) = pvc.spec.and_then(|s| s.volume_name).filter(|v| !v.is_empty()) else {
        return Err(format!("persistentvolumeclaim \"{claim}\" is not bound"));
    };
    let pv = kube::Api::<PersistentVolume>::all(client.clone())
        .get_opt(&volume)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolume \"{volume}\" not found"))?;
    let spec = pv.spec.unwrap_or_default();
    match (spec.host_path, spec.local) {
        (Some(hp), _) => Ok(PathBuf::from(hp.path)),
        (None, Some(local)) => Ok(PathBuf::from(local.path)),
        _ => Err(format!("persistentvolume \"{volume}\": only hostPath and local volumes can be mounted on this node")),
    }
}

fn is_mountpoint(p: &Path) -> bool {
    let target = p.display().to_string();
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(target.as_str())))
}

/// Unmounts what [`prepare`] mounted (tmpfs emptyDirs) and removes the pod's directory.
pub fn cleanup(pod_dir: &Path) {
    let tmpfs = pod_dir.join("volumes").join("kubernetes.io~empty-dir");
    for e in std::fs::read_dir(&tmpfs).into_iter().flatten().flatten() {
        if is_mountpoint(&e.path()) {
            let _ = nix::mount::umount(&e.path());
        }
    }
    let _ = std::fs::remove_dir_all(pod_dir);
}

/// Where a volume's files come from: a ConfigMap or a Secret of the pod's namespace.
#[derive(Clone, Copy)]
enum Source {
    ConfigMap,
    Secret,
}

impl Source {
    /// The word Kubernetes' messages use for it.
    fn word(self) -> &'static str {
        match self {
            Source::ConfigMap => "configmap",
            Source::Secret => "secret",
        }
    }

    /// The object's keys and bytes (`data` and `binaryData`/`stringData`), or None when absent.
    async fn read(self, client: &kube::Client, ns: &str, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        Ok(match self {
            Source::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), ns).get_opt(name).await.map_err(|e| e.to_string())?.map(|cm| {
                let mut d: BTreeMap<String, Vec<u8>> = cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                d.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
                d
            }),
            Source::Secret => Api::<Secret>::namespaced(client.clone(), ns).get_opt(name).await.map_err(|e| e.to_string())?.map(|s| {
                let mut d: BTreeMap<String, Vec<u8>> = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                d.extend(s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
                d
            }),
        })
    }
}

/// Adds the files a ConfigMap or Secret projects: the listed `items`, or every key.
#[allow(clippy::too_many_arguments)]
async fn add_keys(
    client: &kube::Client,
    source: Source,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    mode: i32,
    optional: bool,
    files: &mut BTreeMap<String, (Vec<u8>, i32)>,
) -> Result<(), String> {
    let what = source.word();
    let data = match source.read(client, ns, name).await? {
        Some(d) => d,
        None if optional => return Ok(()),
        None => return Err(format!("{what} \"{name}\" not found")),
    };
    match items {
        Some(items) => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        files.insert(it.path.clone(), (v.clone(), it.mode.unwrap_or(mode)));
                    }
                    None if optional => {}
                    None => return Err(format!("{what} references non-existent config key: {}", it.key)),
                }
            }
        }
        None => files.extend(data.into_iter().map(|(k, v)| (k, (v, mode)))),
    }
    Ok(())
}

fn add_downward(pod: &Pod, items: &[DownwardAPIVolumeFile], mode: i32, files: &mut BTreeMap<String, (Vec<u8>, i32)>) {
    for it in items {
        let value = match (&it.field_ref, &it.resource_field_ref) {
            (Some(f), _) => crate::env::field_value(pod, &f.field_path).unwrap_or_default(),
            (None, Some(r)) => crate::env::resource_value(pod, r.container_name.as_deref().unwrap_or(""), r).unwrap_or_default(),
            _ => continue,
        };
        files.insert(it.path.clone(), (value.into_bytes(), it.mode.unwrap_or(mode)));
    }
}

/// Writes `files` into `dir`, each replaced atomically, and removes files
/// that are no longer in the source: a running container sees an update
/// whole, never half-written.
fn write_files(dir: &Path, files: &BTreeMap<String, (Vec<u8>, i32)>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    for (rel, (data, mode)) in files {
        let rel = rel.trim_start_matches('/');
        if rel.split('/').any(|c| c == "..") {
            continue;
        }
        let path = dir.join(rel);
        if std::fs::read(&path).is_ok_and(|d| &d == data) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("f")));
        std::fs::write(&tmp, data)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(*mode as u32 & 0o7777))?;
        std::fs::rename(&tmp, &path)?;
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if e.path().is_file() && !files.contains_key(&name) && !files.keys().any(|k| k.starts_with(&format!("{name}/"))) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

//! Well-known names of skiff's local-path storage, shared by the API
//! server (the default StorageClass), the controller manager (its
//! provisioner) and the kubelet (where the volumes live on a node).

/// The StorageClass every cluster starts with.
pub const LOCAL_PATH_CLASS: &str = "local-path";
/// Its provisioner: the controller manager's local-path provisioner.
pub const LOCAL_PATH_PROVISIONER: &str = "skiff.io/local-path";
/// The Node annotation where the kubelet says under which directory its
/// local-path volumes live.
pub const LOCAL_PATH_ROOT_ANNOTATION: &str = "skiff.io/local-path-root";
/// The finalizer that keeps a claim while a pod uses it (the
/// StorageObjectInUseProtection admission plugin adds it; the controller
/// manager lifts it).
pub const PVC_PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";
/// The annotation that makes a StorageClass the default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

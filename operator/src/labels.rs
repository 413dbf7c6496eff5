//! The labels and annotations the operator reads and writes on Kubernetes objects: what it
//! selects pods by, what it tells Services with, and the requests users make with them.

/// Label carrying the owning cluster's name, on every object and pod.
pub const CLUSTER_LABEL: &str = "replicated.dev/cluster";
/// Label the operator puts on pods to say what they do (`leader`, `follower`); client Services
/// select on it. Never set by the StatefulSet template.
pub const ROLE_LABEL: &str = "replicated.dev/role";
pub const ROLE_LEADER: &str = "leader";
pub const ROLE_FOLLOWER: &str = "follower";
/// Label a Secret named by `spec.adminSecretRef` must carry, with the cluster's name as value
/// (unless the cluster owns it): the operator mounts that Secret into pods, so it must have
/// been made for this cluster, not be any Secret of the namespace.
pub const ADMIN_SECRET_FOR_LABEL: &str = "replicated.dev/admin-secret-for";

/// Label the Secret named by `spec.clientAuth.secretName` must carry, with the cluster's name as
/// value (unless the cluster owns it), for the same reason as the admin Secret's.
pub const CLIENT_TOKENS_FOR_LABEL: &str = "replicated.dev/client-tokens-for";

/// On a cluster: ask for a switchover to the named pod, or `any` (the most caught-up
/// follower). The operator removes it once done or refused.
pub const SWITCHOVER_ANNOTATION: &str = "replicated.dev/switchover";
/// On a cluster: any new value is copied into the pod template, so every pod is restarted by
/// a rolling update (`kubectl rcl restart` sets it to the time).
pub const RESTARTED_AT_ANNOTATION: &str = "replicated.dev/restartedAt";
/// On a pod: `"true"` fences it for maintenance: it is never elected leader, and a leader so
/// marked is switched away from.
pub const FENCED_ANNOTATION: &str = "replicated.dev/fenced";
/// On a cluster: any new value re-issues the node certificate now (it is renewed by itself
/// before it expires).
pub const ROTATE_CERTIFICATE_ANNOTATION: &str = "replicated.dev/rotate-certificate";
/// On a cluster: any new value rotates the admin token of an operator-managed admin Secret.
pub const ROTATE_ADMIN_TOKEN_ANNOTATION: &str = "replicated.dev/rotate-admin-token";
/// On the admin and node certificate Secrets: the rotation request they were last written for.
pub const ROTATION_ANNOTATION: &str = "replicated.dev/rotation";
/// On the node certificate Secret: when the certificate expires (seconds since the Unix epoch).
pub const NOT_AFTER_ANNOTATION: &str = "replicated.dev/not-after";
/// On the node certificate Secret: the DNS names the certificate carries, comma-separated.
pub const NAMES_ANNOTATION: &str = "replicated.dev/names";

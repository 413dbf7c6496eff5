//! (pure) What TLS adds to a valid cluster: the objects holding its certificates, the names the
//! node certificate carries, and the node settings that point at the mounted files.

use std::collections::BTreeMap;

use rc_api::env;

/// Where the node certificate Secret is mounted, and its keys (the `kubernetes.io/tls` ones).
pub const TLS_DIR: &str = "/etc/rc-node/tls";
pub const CA_CERT_KEY: &str = "ca.crt";
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";
/// The CA's private key, only in the CA Secret (never mounted).
pub const CA_KEY_KEY: &str = "ca.key";

/// With TLS: the objects that hold the cluster's certificates and the names they carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsNames {
    pub ca_secret: String,
    pub tls_secret: String,
    pub ca_config_map: String,
    /// The DNS names of the node certificate.
    pub dns_names: Vec<String>,
    /// The name checked when a node is dialled by IP (`<cluster>.<namespace>.svc`).
    pub server_name: String,
}

impl TlsNames {
    pub(super) fn new(name: &str, namespace: &str, peers_service: &str) -> Self {
        TlsNames {
            ca_secret: ca_secret_name(name),
            tls_secret: tls_secret_name(name),
            ca_config_map: ca_config_map_name(name),
            dns_names: rc_tls::issue::node_dns_names(name, namespace, peers_service),
            server_name: rc_tls::issue::cluster_server_name(name, namespace),
        }
    }
}

/// Name of the Secret holding the cluster's CA and its key (read by the operator only).
pub fn ca_secret_name(cluster: &str) -> String {
    format!("{cluster}-ca")
}

/// Name of the Secret holding the node certificate, its key and the CA bundle (mounted).
pub fn tls_secret_name(cluster: &str) -> String {
    format!("{cluster}-tls")
}

/// Name of the ConfigMap publishing the CA certificate for clients.
pub fn ca_config_map_name(cluster: &str) -> String {
    format!("{cluster}-ca")
}

/// The node settings of TLS: the mounted node certificate Secret's files.
pub(super) fn tls_node_config(tls: &TlsNames) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            env::TLS_CERT_FILE.to_owned(),
            format!("{TLS_DIR}/{TLS_CERT_KEY}"),
        ),
        (
            env::TLS_KEY_FILE.to_owned(),
            format!("{TLS_DIR}/{TLS_KEY_KEY}"),
        ),
        (
            env::TLS_CA_FILE.to_owned(),
            format!("{TLS_DIR}/{CA_CERT_KEY}"),
        ),
        (env::TLS_SERVER_NAME.to_owned(), tls.server_name.clone()),
    ])
}

//! (pure) A container's environment, as the kubelet builds it: the API server's service variables,
//! then `envFrom`, then `env` (later entries win), with `$(VAR)` references expanded against what
//! was defined before; plus downward-API field paths, shared with downwardAPI volumes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvFromSource, EnvVarSource, Pod, Secret};
use k8s_openapi::ByteString;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("configmap {0:?} not found")]
    ConfigMapMissing(String),
    #[error("secret {0:?} not found")]
    SecretMissing(String),
    #[error("key {key:?} not found in {kind} {name:?}")]
    KeyMissing {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("unsupported fieldPath {0:?}")]
    FieldPath(String),
    #[error("unsupported env source for {0:?} (only value, fieldRef, configMapKeyRef, secretKeyRef, resourceFieldRef)")]
    Source(String),
}

/// The objects and addresses a container's environment may refer to.
pub struct EnvInputs<'a> {
    pub pod: &'a Pod,
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
    /// ConfigMaps and Secrets of the pod's namespace, by name, that exist.
    pub config_maps: &'a BTreeMap<String, ConfigMap>,
    pub secrets: &'a BTreeMap<String, Secret>,
    /// Variables every container gets first (`KUBERNETES_SERVICE_HOST`, `HOSTNAME`, `PATH`, ...).
    pub base: &'a [(String, String)],
}

/// Names of the ConfigMaps and Secrets a container's environment refers to.
pub fn referenced_objects(container: &Container) -> (Vec<String>, Vec<String>) {
    let (mut cms, mut secrets) = (Vec::new(), Vec::new());
    for from in container.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            cms.push(r.name.clone());
        }
        if let Some(r) = &from.secret_ref {
            secrets.push(r.name.clone());
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(src) = &var.value_from {
            if let Some(r) = &src.config_map_key_ref {
                cms.push(r.name.clone());
            }
            if let Some(r) = &src.secret_key_ref {
                secrets.push(r.name.clone());
            }
        }
    }
    cms.sort();
    cms.dedup();
    secrets.sort();
    secrets.dedup();
    (cms, secrets)
}

/// The container's final environment, in definition order (a name defined twice keeps its
/// first position and its last value, as in a map).
pub fn container_env(
    container: &Container,
    inputs: &EnvInputs<'_>,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut env = OrderedEnv::default();
    for (k, v) in inputs.base {
        env.set(k, v.clone());
    }
    for from in container.env_from.iter().flatten() {
        env_from(&mut env, from, inputs)?;
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => Some(expand(v, &env.map)),
            (None, None) => Some(String::new()),
            (None, Some(src)) => value_from(container, inputs, &var.name, src)?,
        };
        if let Some(value) = value {
            env.set(&var.name, value);
        }
    }
    Ok(env.into_vec())
}

/// One `envFrom` entry: every key of its ConfigMap or Secret, with the prefix.
fn env_from(
    env: &mut OrderedEnv,
    from: &EnvFromSource,
    inputs: &EnvInputs<'_>,
) -> Result<(), EnvError> {
    let prefix = from.prefix.as_deref().unwrap_or("");
    if let Some(r) = &from.config_map_ref {
        match inputs.config_maps.get(&r.name) {
            Some(cm) => env.set_prefixed(
                prefix,
                cm.data.iter().flatten().map(|(k, v)| (k, v.clone())),
            ),
            None if r.optional == Some(true) => {}
            None => return Err(EnvError::ConfigMapMissing(r.name.clone())),
        }
    }
    if let Some(r) = &from.secret_ref {
        match inputs.secrets.get(&r.name) {
            Some(s) => env.set_prefixed(prefix, s.data.iter().flatten().map(|(k, v)| (k, text(v)))),
            None if r.optional == Some(true) => {}
            None => return Err(EnvError::SecretMissing(r.name.clone())),
        }
    }
    Ok(())
}

/// An `env` entry's `valueFrom`; `None` for an optional key or object that is missing.
fn value_from(
    container: &Container,
    inputs: &EnvInputs<'_>,
    name: &str,
    src: &EnvVarSource,
) -> Result<Option<String>, EnvError> {
    if let Some(f) = &src.field_ref {
        field_value(inputs.pod, &f.field_path, inputs.pod_ip, inputs.host_ip).map(Some)
    } else if let Some(r) = &src.config_map_key_ref {
        let object = inputs
            .config_maps
            .get(&r.name)
            .map(|cm| cm.data.as_ref().and_then(|d| d.get(&r.key)).cloned());
        let missing = EnvError::ConfigMapMissing;
        key_ref(object, r.optional, "configmap", &r.name, &r.key, missing)
    } else if let Some(r) = &src.secret_key_ref {
        let object = inputs
            .secrets
            .get(&r.name)
            .map(|s| s.data.as_ref().and_then(|d| d.get(&r.key)).map(text));
        let missing = EnvError::SecretMissing;
        key_ref(object, r.optional, "secret", &r.name, &r.key, missing)
    } else if let Some(r) = &src.resource_field_ref {
        Ok(Some(resource_value(container, &r.resource)))
    } else {
        Err(EnvError::Source(name.to_owned()))
    }
}

/// A Secret's value as a variable (invalid UTF-8 replaced).
fn text(v: &ByteString) -> String {
    String::from_utf8_lossy(&v.0).into_owned()
}

/// `command` + `args` with `$(VAR)` expanded against the final environment.
pub fn expand_all(items: &[String], env: &[(String, String)]) -> Vec<String> {
    let map: BTreeMap<String, String> = env.iter().cloned().collect();
    items.iter().map(|s| expand(s, &map)).collect()
}

/// Kubernetes' `$(VAR)` syntax: a defined variable is replaced, an undefined reference stays as
/// written, `$$` is a literal `$`.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str(&rest[pos..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A downward-API field of the pod, as the kubelet resolves it.
pub fn field_value(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let subscript = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")
            .map(str::to_owned)
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_owned(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_owned(),
        "metadata.labels" | "metadata.annotations" => {
            let map = if path == "metadata.labels" {
                &meta.labels
            } else {
                &meta.annotations
            };
            map.iter()
                .flatten()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect::<Vec<_>>()
                .join("\n")
        }
        _ => {
            if let Some(key) = subscript("metadata.labels") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(&key).cloned())
                    .unwrap_or_default()
            } else if let Some(key) = subscript("metadata.annotations") {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(&key).cloned())
                    .unwrap_or_default()
            } else {
                return Err(EnvError::FieldPath(path.to_owned()));
            }
        }
    };
    Ok(value)
}

/// `resourceFieldRef`: the container's limit (or request) as written; the divisor is ignored.
fn resource_value(container: &Container, resource: &str) -> String {
    let res = container.resources.as_ref();
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let map = match kind {
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => res.and_then(|r| r.limits.as_ref()),
    };
    map.and_then(|m| m.get(name))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "0".to_owned())
}

#[derive(Default)]
struct OrderedEnv {
    order: Vec<String>,
    map: BTreeMap<String, String>,
}

impl OrderedEnv {
    fn set(&mut self, key: &str, value: String) {
        if self.map.insert(key.to_owned(), value).is_none() {
            self.order.push(key.to_owned());
        }
    }

    fn set_prefixed<'a>(&mut self, prefix: &str, vars: impl Iterator<Item = (&'a String, String)>) {
        for (k, v) in vars {
            self.set(&format!("{prefix}{k}"), v);
        }
    }

    fn into_vec(mut self) -> Vec<(String, String)> {
        self.order
            .into_iter()
            .filter_map(|k| self.map.remove(&k).map(|v| (k, v)))
            .collect()
    }
}

/// A `configMapKeyRef`/`secretKeyRef` value: `object` is `None` when the object is missing and
/// `Some(None)` when the key is; either is an error unless the reference is optional.
fn key_ref(
    object: Option<Option<String>>,
    optional: Option<bool>,
    kind: &'static str,
    name: &str,
    key: &str,
    object_missing: fn(String) -> EnvError,
) -> Result<Option<String>, EnvError> {
    match object {
        Some(Some(v)) => Ok(Some(v)),
        _ if optional == Some(true) => Ok(None),
        Some(None) => Err(EnvError::KeyMissing {
            kind,
            name: name.to_owned(),
            key: key.to_owned(),
        }),
        None => Err(object_missing(name.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, EnvVar, ObjectFieldSelector, PodSpec, SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("orders-0".into()),
                namespace: Some("shop".into()),
                labels: Some(BTreeMap::from([("app".into(), "rc".into())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("proc-node-0".into()),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn field(path: &str) -> Option<EnvVarSource> {
        Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        })
    }

    #[test]
    fn expand_replaces_known_keeps_unknown_and_unescapes() {
        let vars = BTreeMap::from([("A".to_owned(), "x".to_owned())]);
        assert_eq!(expand("$(A).$(B):$$(A)$", &vars), "x.$(B):$(A)$");
        assert_eq!(expand("$(A", &vars), "$(A");
    }

    #[test]
    fn env_from_then_env_with_field_refs_and_expansion() {
        let pod = pod();
        let cms = BTreeMap::from([(
            "cfg".to_owned(),
            ConfigMap {
                data: Some(BTreeMap::from([
                    ("RC_MODE".into(), "single-leader".into()),
                    ("POD_NAME".into(), "overridden-later".into()),
                ])),
                ..ConfigMap::default()
            },
        )]);
        let secrets = BTreeMap::from([(
            "s".to_owned(),
            Secret {
                data: Some(BTreeMap::from([(
                    "token".into(),
                    ByteString(b"t0k".to_vec()),
                )])),
                ..Secret::default()
            },
        )]);
        let container = Container {
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cfg".into(),
                    optional: None,
                }),
                ..EnvFromSource::default()
            }]),
            env: Some(vec![
                EnvVar {
                    name: "POD_NAME".into(),
                    value_from: field("metadata.name"),
                    ..EnvVar::default()
                },
                EnvVar {
                    name: "ADDR".into(),
                    value: Some("$(POD_NAME).peers.$(NS).svc".into()),
                    ..EnvVar::default()
                },
                EnvVar {
                    name: "IP".into(),
                    value_from: field("status.podIP"),
                    ..EnvVar::default()
                },
                EnvVar {
                    name: "APP".into(),
                    value_from: field("metadata.labels['app']"),
                    ..EnvVar::default()
                },
                EnvVar {
                    name: "TOKEN".into(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "s".into(),
                            key: "token".into(),
                            optional: None,
                        }),
                        ..EnvVarSource::default()
                    }),
                    ..EnvVar::default()
                },
            ]),
            ..Container::default()
        };
        let base = vec![("PATH".to_owned(), "/bin".to_owned())];
        let inputs = EnvInputs {
            pod: &pod,
            pod_ip: "10.241.0.7",
            host_ip: "10.241.0.1",
            config_maps: &cms,
            secrets: &secrets,
            base: &base,
        };
        let env = container_env(&container, &inputs).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/bin"));
        assert_eq!(get("RC_MODE"), Some("single-leader"));
        assert_eq!(get("POD_NAME"), Some("orders-0"));
        assert_eq!(get("ADDR"), Some("orders-0.peers.$(NS).svc"));
        assert_eq!(get("IP"), Some("10.241.0.7"));
        assert_eq!(get("APP"), Some("rc"));
        assert_eq!(get("TOKEN"), Some("t0k"));
        assert_eq!(
            expand_all(&["--id=$(POD_NAME)".to_owned()], &env),
            vec!["--id=orders-0".to_owned()]
        );
    }

    #[test]
    fn missing_configmap_is_an_error_unless_optional() {
        let pod = pod();
        let empty = BTreeMap::new();
        let container = Container {
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "nope".into(),
                    optional: None,
                }),
                ..EnvFromSource::default()
            }]),
            ..Container::default()
        };
        let inputs = EnvInputs {
            pod: &pod,
            pod_ip: "",
            host_ip: "",
            config_maps: &empty,
            secrets: &BTreeMap::new(),
            base: &[],
        };
        assert_eq!(
            container_env(&container, &inputs),
            Err(EnvError::ConfigMapMissing("nope".into()))
        );
    }

    #[test]
    fn referenced_objects_lists_each_name_once() {
        let container = Container {
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cfg".into(),
                    optional: None,
                }),
                ..EnvFromSource::default()
            }]),
            ..Container::default()
        };
        assert_eq!(
            referenced_objects(&container),
            (vec!["cfg".to_owned()], vec![])
        );
    }
}

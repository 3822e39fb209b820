//! Impersonation (`kubectl --as`, `--as-group`, `--as-uid`): the
//! `Impersonate-*` headers replace the requester's identity, each part
//! authorized first with the `impersonate` verb (on `users`, `groups`,
//! `serviceaccounts`, `uids` or `userextras/KEY`), as kube-apiserver's
//! impersonation filter does.

use hyper::HeaderMap;
use skiff_api::rbac::{Attributes, UserInfo};
use skiff_api::ApiError;

use super::Authorizer;
use crate::cache::WatchCache;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA: &str = "impersonate-extra-";

/// Whether the request asks to act as someone else.
pub(crate) fn requested(headers: &HeaderMap) -> bool {
    headers.keys().any(|k| k.as_str().starts_with("impersonate-"))
}

/// The identity the request acts as: the requester's own when no
/// `Impersonate-*` header is present, else the impersonated one once the
/// requester may impersonate every part of it.
pub(crate) fn resolve(auth: &Authorizer, cache: &WatchCache, requester: UserInfo, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    if !requested(headers) {
        return Ok(requester);
    }
    let values = |name: &str| -> Vec<String> { headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(|v| v.trim().to_string()).collect() };
    let groups = values(GROUP);
    let uid = values(UID).into_iter().next();
    let mut extra: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in headers.iter() {
        if let Some(key) = k.as_str().strip_prefix(EXTRA) {
            let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy().to_string();
            let value = v.to_str().unwrap_or_default().to_string();
            match extra.iter_mut().find(|(k, _)| *k == key) {
                Some((_, vs)) => vs.push(value),
                None => extra.push((key, vec![value])),
            }
        }
    }
    let Some(name) = values(USER).into_iter().next().filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request("requested impersonation of groups, a uid or extra fields without impersonating a user"));
    };
    let may = |a: Attributes| auth.check(cache, &requester, &a);
    let act = |group: &str, resource: &str, subresource: &str, namespace: &str, name: &str| Attributes {
        verb: "impersonate".into(),
        resource_request: true,
        group: group.into(),
        resource: resource.into(),
        subresource: subresource.into(),
        namespace: namespace.into(),
        name: name.into(),
        ..Default::default()
    };
    let service_account = name.strip_prefix("system:serviceaccount:").and_then(|rest| rest.split_once(':'));
    match service_account {
        Some((ns, sa)) => may(act("", "serviceaccounts", "", ns, sa))?,
        None => may(act("", "users", "", "", &name))?,
    }
    for g in &groups {
        may(act("", "groups", "", "", g))?;
    }
    if let Some(uid) = &uid {
        may(act("authentication.k8s.io", "uids", "", "", uid))?;
    }
    for (key, vs) in &extra {
        for v in vs {
            may(act("authentication.k8s.io", "userextras", key, "", v))?;
        }
    }
    let mut user = UserInfo { name: name.clone(), groups, extra, uid: uid.unwrap_or_default() };
    if let Some((ns, _)) = service_account {
        if user.groups.is_empty() {
            user.groups = vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}")];
        }
    }
    let everyone = if name == "system:anonymous" { "system:unauthenticated" } else { "system:authenticated" };
    if !user.groups.iter().any(|g| g == everyone) {
        user.groups.push(everyone.into());
    }
    Ok(user)
}

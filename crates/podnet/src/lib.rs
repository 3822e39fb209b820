//! The pod network between nodes: what flannel is to k3s. Each node's pods
//! live in its own podCIDR on its own bridge (the kubelet's CNI config);
//! this makes every other node's podCIDR reachable from this one, pod IP to
//! pod IP with no NAT, by one of flannel's backends:
//!
//! - `vxlan` (the default): a vxlan device (VNI 1, UDP 8472, as flannel)
//!   holding this node's podCIDR's first address; for every other node a
//!   route to its podCIDR via its device's address, onlink, a permanent
//!   ARP entry giving that address the peer device's MAC, and a forwarding
//!   entry sending frames for that MAC to the peer node's address. Works
//!   across any IP network.
//! - `host-gw`: a route to every other node's podCIDR via that node's
//!   address (nodes on one L2 segment; no encapsulation).
//! - `none`: nothing; the user brings a network.
//!
//! A node publishes its end (backend, address, the vxlan device's MAC) in
//! its Node's annotations, under flannel's names, and reads the other
//! nodes' from the shared Node informer: routes follow nodes joining,
//! changing and leaving as the watch reports them, and a relist (and a
//! periodic check) removes what is left of nodes that went while this
//! agent was away, recognised by skiff's route protocol number. The kernel
//! is programmed over netlink ([`kernel`]), never by running `ip`.
//!
//! Policy (NetworkPolicy) is not here: it will be a table of its own in
//! nftables, beside the proxy's, matching on the pod addresses this
//! network keeps unchanged.

pub mod kernel;
pub mod peer;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use skiff_api::cidr::Cidr;
use skiff_runtime::informer::{Change, Informer};
use tokio::sync::watch;

use kernel::{Kernel, Link};
use peer::Peer;
use rtnetlink::packet_route::AddressFamily;

/// flannel's vxlan network identifier.
pub const VNI: u32 = 1;
/// flannel's vxlan UDP port on Linux.
pub const VXLAN_PORT: u16 = 8472;
/// What vxlan's headers take from the underlay's MTU (IPv4 + UDP + vxlan + Ethernet).
pub const VXLAN_OVERHEAD: u32 = 50;
/// How often the kernel is checked against the wanted state (routes
/// someone deleted by hand come back).
const RECHECK: Duration = Duration::from_secs(30);

/// The way pods on different nodes reach each other (`--flannel-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An overlay of vxlan tunnels between nodes.
    Vxlan,
    /// Plain routes via the other nodes' addresses (one L2 segment).
    HostGw,
    /// None: the user's own network.
    None,
}

impl Backend {
    /// The name, as `--flannel-backend` and the Node annotation write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vxlan => "vxlan",
            Self::HostGw => "host-gw",
            Self::None => "none",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vxlan" => Ok(Self::Vxlan),
            "host-gw" => Ok(Self::HostGw),
            "none" => Ok(Self::None),
            _ => Err(format!("unknown flannel backend {s:?}: want vxlan, host-gw or none")),
        }
    }
}

/// Why the pod network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening the netlink socket.
    #[error("netlink socket: {0}")]
    Io(std::io::Error),
    /// A netlink request the kernel refused.
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    /// No device holds the node's address.
    #[error("no network device holds the node address {0} (--node-ip)")]
    NoDevice(Ipv4Addr),
    /// A device disappeared while being set up.
    #[error("device {0} disappeared while being set up")]
    Vanished(String),
    /// The node address is not IPv4.
    #[error("the pod network needs an IPv4 node address (--node-ip)")]
    NotIpv4,
}

/// The pod network's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The backend.
    pub backend: Backend,
    /// This node's name.
    pub node_name: String,
    /// This node's address: where other nodes send its pods' traffic.
    pub node_ip: Ipv4Addr,
    /// The whole pod network (`--cluster-cidr`): routes outside it are never touched.
    pub cluster_cidr: Cidr,
    /// The vxlan device's name ([`device_name`]).
    pub device: String,
}

/// The vxlan device of the node whose data dir is `agent_dir`: `skiff.1`
/// (flannel's is `flannel.1`) for the system's (`/var/lib/skiff`), a name
/// of its own for any other, as the proxy's table has, so that several
/// nodes on one machine (tests) never share one.
pub fn device_name(agent_dir: &Path) -> String {
    let system = Path::new("/var/lib/skiff");
    if agent_dir == system || agent_dir == system.join("agent") {
        return format!("skiff.{VNI}");
    }
    format!("skiffvx{:08x}", skiff_runtime::path_hash(agent_dir))
}

/// The MTU pods on this node should get: the underlay's, less what the
/// backend's encapsulation takes (`None`: leave the default).
pub async fn pod_mtu(backend: Backend, node_ip: Ipv4Addr) -> Result<Option<u32>, Error> {
    if backend != Backend::Vxlan {
        return Ok(None);
    }
    let link = Kernel::connect()?.link_with_address(node_ip).await?;
    Ok(Some(link.mtu.saturating_sub(VXLAN_OVERHEAD)))
}

/// Removes this node's pod network from the machine: its vxlan device
/// (and with it every route, ARP and forwarding entry through it) and its
/// host-gw routes. For uninstall and tests; a restarting agent keeps them.
/// `within`: only routes into this range (default: all of skiff's).
pub async fn remove(agent_dir: &Path, within: Option<Cidr>) -> Result<(), Error> {
    let k = Kernel::connect()?;
    k.delete_link(&device_name(agent_dir)).await?;
    for r in k.routes(within).await? {
        k.delete_route(&r).await?;
    }
    Ok(())
}

/// This node's end of the network, once set up.
struct Local {
    pod_cidr: Cidr,
    underlay: Link,
    vxlan: Option<Link>,
}

/// Runs the pod network until shutdown: sets up this node's end once its
/// Node has a podCIDR, publishes it, and keeps the routes to every other
/// node's podCIDR as the Node informer reports them.
pub async fn run(client: kube::Client, opts: Options, shutdown: watch::Receiver<bool>) -> Result<(), Error> {
    if opts.backend == Backend::None {
        return Ok(());
    }
    let kernel = Kernel::connect()?;
    let nodes = Informer::<Node>::start(Api::all(client.clone()), watcher::Config::default(), shutdown.clone());
    let api: Api<Node> = Api::all(client);
    let mut events = nodes.changes().boxed();
    let mut local: Option<Local> = None;
    // What was last applied; `None` forces a full check against the kernel.
    let mut applied: Option<BTreeMap<String, Peer>> = None;
    let mut synced = false;
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = shutdown;
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Change::Synced) => {
                    synced = true;
                    applied = None;
                }
                Some(Change::Applied(n)) if n.metadata.name.as_deref() == Some(opts.node_name.as_str()) => {
                    if let Err(e) = set_up_local(&kernel, &api, &opts, &n, &mut local).await {
                        tracing::warn!(error = %e, "setting up this node's end of the pod network (retried at the next event)");
                    }
                }
                Some(_) => {}
                None => return Ok(()),
            },
            _ = recheck.tick() => applied = None,
            _ = shutdown.changed() => return Ok(()),
        }
        let (Some(l), true) = (&local, synced) else { continue };
        let wanted = peers(&nodes.store().state(), &opts, l.pod_cidr);
        if applied.as_ref() == Some(&wanted) {
            continue;
        }
        match apply(&kernel, &opts, l, &wanted, applied.is_none()).await {
            Ok(()) => applied = Some(wanted),
            Err(e) => {
                tracing::warn!(error = %e, "programming routes to the other nodes (retried)");
                applied = None;
            }
        }
    }
}

/// The other nodes that are peers now, by name.
fn peers(nodes: &[Arc<Node>], opts: &Options, own: Cidr) -> BTreeMap<String, Peer> {
    let mut out = BTreeMap::new();
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        if name == opts.node_name {
            continue;
        }
        match peer::peer(n, opts.backend) {
            Ok(p) if p.pod_cidr == own || !opts.cluster_cidr.contains(p.pod_cidr.base) => {
                tracing::warn!(node = %name, pod_cidr = %p.pod_cidr, "a node's podCIDR is ours or outside the cluster CIDR; no route to it");
            }
            Ok(p) => {
                out.insert(name, p);
            }
            Err(peer::NotAPeer::Incomplete) => {}
            Err(peer::NotAPeer::OtherBackend(b)) => {
                tracing::warn!(node = %name, backend = %b, ours = opts.backend.as_str(), "a node runs another flannel backend; its pods are out of reach");
            }
            Err(peer::NotAPeer::Invalid(why)) => tracing::warn!(node = %name, %why, "a node's pod network annotations do not parse"),
        }
    }
    out
}

/// Sets up this node's end (the vxlan device and its address) for the
/// Node's podCIDR, and publishes it in the Node's annotations.
async fn set_up_local(kernel: &Kernel, api: &Api<Node>, opts: &Options, node: &Node, local: &mut Option<Local>) -> Result<(), Error> {
    let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).and_then(|c| c.parse::<Cidr>().ok()) else {
        return Ok(());
    };
    if local.as_ref().is_none_or(|l| l.pod_cidr != cidr) {
        let underlay = kernel.link_with_address(opts.node_ip).await?;
        // Forwarding between the pod bridge and the other nodes; a fresh
        // network namespace starts with it off.
        if let Err(e) = tokio::fs::write("/proc/sys/net/ipv4/ip_forward", "1").await {
            tracing::warn!(error = %e, "enabling IPv4 forwarding");
        }
        let vxlan = match opts.backend {
            Backend::Vxlan => {
                let mtu = underlay.mtu.saturating_sub(VXLAN_OVERHEAD);
                let dev = kernel.ensure_vxlan(&opts.device, VNI, VXLAN_PORT, opts.node_ip, &underlay, mtu).await?;
                kernel.set_only_address(dev.index, cidr.base).await?;
                Some(dev)
            }
            _ => None,
        };
        tracing::info!(backend = opts.backend.as_str(), pod_cidr = %cidr, device = %underlay.name, "this node's end of the pod network is up");
        *local = Some(Local { pod_cidr: cidr, underlay, vxlan });
    }
    let l = local.as_ref().ok_or_else(|| Error::Vanished(opts.device.clone()))?;
    let want = peer::annotations(opts.backend, opts.node_ip, VNI, l.vxlan.as_ref().and_then(|v| v.mac));
    let have = node.metadata.annotations.clone().unwrap_or_default();
    if want.iter().any(|(k, v)| have.get(k) != Some(v)) {
        let patch = serde_json::json!({"metadata": {"annotations": want}});
        if let Err(e) = api.patch(&opts.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            tracing::warn!(error = %e, "publishing the pod network annotations (retried at the next event)");
        }
    }
    Ok(())
}

/// Programs the routes (and for vxlan the ARP and forwarding entries) to
/// `wanted`; `full`: also removes whatever of ours the kernel holds beyond it.
async fn apply(kernel: &Kernel, opts: &Options, local: &Local, wanted: &BTreeMap<String, Peer>, full: bool) -> Result<(), Error> {
    let have = kernel.routes(Some(opts.cluster_cidr)).await?;
    for p in wanted.values() {
        match &local.vxlan {
            Some(dev) => {
                let Some(mac) = p.vtep_mac else { continue };
                let gw = p.pod_cidr.base;
                kernel.replace_neighbour(dev.index, gw, mac).await?;
                kernel.replace_fdb(dev.index, mac, p.public_ip).await?;
                if !have.iter().any(|r| r.dst == p.pod_cidr && r.gateway == Some(gw) && r.oif == Some(dev.index)) {
                    kernel.replace_route(p.pod_cidr, gw, dev.index, true).await?;
                }
            }
            None => {
                if !have.iter().any(|r| r.dst == p.pod_cidr && r.gateway == Some(p.public_ip) && r.oif == Some(local.underlay.index)) {
                    kernel.replace_route(p.pod_cidr, p.public_ip, local.underlay.index, false).await?;
                }
            }
        }
    }
    let mut removed = 0;
    for r in &have {
        if !wanted.values().any(|p| p.pod_cidr == r.dst) {
            kernel.delete_route(r).await?;
            removed += 1;
        }
    }
    if let (Some(dev), true) = (&local.vxlan, full || removed > 0) {
        // Entries of peers gone: their ARP entries (by the peer device's
        // address) and forwarding entries (by its MAC).
        for (ip, _, m) in kernel.entries(dev.index, AddressFamily::Inet).await? {
            if ip.is_some_and(|ip| !wanted.values().any(|p| p.pod_cidr.base == ip)) {
                kernel.delete_entry(m).await?;
            }
        }
        for (_, mac, m) in kernel.entries(dev.index, AddressFamily::Bridge).await? {
            if mac.is_some_and(|mac| mac != [0; 6] && !wanted.values().any(|p| p.vtep_mac == Some(mac))) {
                kernel.delete_entry(m).await?;
            }
        }
    }
    tracing::debug!(peers = wanted.len(), removed, "pod network routes programmed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_named_per_data_dir_and_fit_an_interface_name() {
        assert_eq!(device_name(Path::new("/var/lib/skiff/agent")), "skiff.1");
        let (a, b) = (device_name(Path::new("/tmp/a/agent")), device_name(Path::new("/tmp/b/agent")));
        assert_ne!(a, b);
        assert!(a.len() <= 15, "{a}");
    }

    #[test]
    fn backends_parse_as_the_flag_writes_them() {
        for b in [Backend::Vxlan, Backend::HostGw, Backend::None] {
            assert_eq!(b.as_str().parse::<Backend>(), Ok(b));
        }
        assert!("wireguard".parse::<Backend>().is_err_and(|e| e.contains("vxlan, host-gw or none")));
    }
}

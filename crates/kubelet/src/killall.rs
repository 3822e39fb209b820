//! `skiff killall`: what a stopped node leaves on its machine, removed, as
//! k3s's `k3s-killall.sh` does. A node's containers outlive the agent on
//! purpose (a restart must not restart every pod), so stopping the server
//! leaves them, their containerd shims, their mounts, the node's bridge
//! and its nftables table behind. This removes those of one data
//! directory, and nothing that is not under it or named after it.

use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// What was removed.
#[derive(Debug, Default)]
pub struct Report {
    /// Processes killed (containers, shims, the supervised containerd).
    pub killed: Vec<i32>,
    /// Mount points unmounted.
    pub unmounted: Vec<PathBuf>,
    /// The bridge and nftables table removed.
    pub network: String,
    /// The pods' network namespaces removed (`/run/netns/cni-*`).
    pub namespaces: Vec<PathBuf>,
}

fn cmdline(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid …: comm may hold spaces, so read after ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is running (a zombie is not: it only waits to be reaped).
fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state != "Z" && state != "X")
}

fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc").into_iter().flatten().flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
}

/// The processes of the node in `agent_dir`: its containerd, the shims
/// that name its socket, and everything below them (the containers).
fn node_processes(agent_dir: &Path) -> Vec<i32> {
    let dir = agent_dir.join("containerd");
    let marker = dir.to_string_lossy().into_owned();
    let all = pids();
    let mut roots: Vec<i32> = all.iter().copied().filter(|p| cmdline(*p).is_some_and(|c| c.contains(&marker))).collect();
    roots.retain(|p| *p != std::process::id() as i32);
    // Descendants, breadth first.
    let mut out = roots.clone();
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        let children: Vec<i32> = all.iter().copied().filter(|c| parent(*c) == Some(p) && !out.contains(c)).collect();
        out.extend(children);
        i += 1;
    }
    out
}

/// The network namespace (its nsfs inode) of a process.
fn net_namespace(pid: i32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net")).ok().map(|m| m.ino())
}

/// containerd's named network namespaces (`/run/netns/cni-*`, one per pod
/// sandbox) that are among `inodes`, the namespaces of this node's pods.
fn pod_namespaces(inodes: &[u64]) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("cni-"))
        .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| inodes.contains(&m.ino())))
        .map(|e| e.path())
        .collect()
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        // mountinfo escapes spaces and the like as octal.
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// The agent directory of a data directory: `DIR/agent` for a server's,
/// `DIR` itself for an agent's.
pub fn agent_dir(data_dir: &Path) -> PathBuf {
    let nested = data_dir.join("agent");
    if nested.join("containerd").exists() {
        nested
    } else {
        data_dir.to_path_buf()
    }
}

/// Kills the node's containers and processes, unmounts what is mounted
/// under `data_dir` and removes the node's bridge and nftables table.
pub fn killall(data_dir: &Path) -> Report {
    let agent = agent_dir(data_dir);
    let mut report = Report::default();
    // Containers first (the leaves), then their shims and containerd, so
    // a shim cannot report an exit to a containerd that restarts it.
    let mut procs = node_processes(&agent);
    procs.reverse();
    // The pods' network namespaces, found through their processes (the
    // node's own namespace, which containerd shares, is not a pod's).
    let own = net_namespace(std::process::id() as i32);
    let mut inodes: Vec<u64> = procs.iter().filter_map(|p| net_namespace(*p)).filter(|i| Some(*i) != own).collect();
    inodes.sort_unstable();
    inodes.dedup();
    let namespaces = pod_namespaces(&inodes);
    for p in procs {
        if kill(Pid::from_raw(p), Signal::SIGKILL).is_ok() {
            report.killed.push(p);
        }
    }
    // Give the kernel a moment to release the killed processes' mounts.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while report.killed.iter().any(|p| alive(*p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for m in mounts_under(data_dir) {
        if nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).is_ok() {
            report.unmounted.push(m);
        }
    }
    for ns in namespaces {
        let _ = nix::mount::umount2(&ns, nix::mount::MntFlags::MNT_DETACH);
        if std::fs::remove_file(&ns).is_ok() {
            report.namespaces.push(ns);
        }
    }
    let bridge = crate::network::bridge_name(&agent);
    // The pods' veth pairs hang off the bridge: deleting the host ends
    // deletes the pairs (the bridge going would leave them up).
    let links = std::process::Command::new("ip").args(["-o", "link", "show", "master", &bridge]).output();
    for line in links.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().lines() {
        if let Some(name) = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) {
            let _ = std::process::Command::new("ip").args(["link", "delete", name]).output();
        }
    }
    crate::network::remove(&agent);
    // libcni's cached results of this network (named after it), and the
    // loopback results of the same sandboxes.
    let cache = Path::new("/var/lib/cni/results");
    for entry in std::fs::read_dir(cache).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(sandbox) = name.strip_prefix(&format!("{bridge}-")).and_then(|r| r.rsplit_once('-')).map(|(id, _)| id.to_string()) {
            let _ = std::fs::remove_file(entry.path());
            let _ = std::fs::remove_file(cache.join(format!("cni-loopback-{sandbox}-lo")));
        }
    }
    report.network = bridge;
    report
}

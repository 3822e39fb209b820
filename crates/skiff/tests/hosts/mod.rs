//! Test hosts: network namespaces of the test's own on one L2 segment (a
//! bridge in a namespace of its own), each with one veth address, and one
//! veth end in the test's namespace through which the test (and a
//! `skiff server` bound to that address) reaches them. Processes run in a
//! host with `nsenter --net`, which enters its network namespace alone
//! (`ip netns exec` would also remount /sys and hide the cgroup
//! filesystem from containerd). Dropping the segment deletes every
//! namespace and with them every veth.

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS`, panicking with its message when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (Debian package iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// One L2 segment and the hosts on it.
pub struct Lan {
    /// Prefix of every namespace and interface name of this segment.
    tag: String,
    /// The segment's /24 (10.250.N.0/24-like), its .1 in the test's namespace.
    subnet: [u8; 3],
    hosts: Vec<String>,
}

/// One test host.
pub struct Host {
    /// Its network namespace (under /run/netns).
    pub netns: String,
    /// Its address on the segment.
    pub ip: Ipv4Addr,
}

impl Lan {
    /// A new segment with its end in the test's namespace.
    pub fn new() -> Lan {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = (std::process::id() * 7 + n * 31) % 250;
        let tag = format!("skt{id:x}{n}");
        let lan = Lan { tag: tag.clone(), subnet: [10, 250, id as u8 + 1], hosts: Vec::new() };
        let ns = format!("{tag}-lan");
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &ns, "link", "set", "br0", "up"]);
        ip(&["link", "add", &tag, "type", "veth", "peer", "name", "up0", "netns", &ns]);
        ip(&["-n", &ns, "link", "set", "up0", "master", "br0", "up"]);
        ip(&["addr", "add", &format!("{}/24", lan.gateway()), "dev", &tag]);
        ip(&["link", "set", &tag, "up"]);
        lan
    }

    /// The test's own address on the segment.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], 1)
    }

    /// Adds a host (addresses .2, .3, ... in order).
    pub fn host(&mut self) -> Host {
        let i = self.hosts.len() + 2;
        let netns = format!("{}-h{i}", self.tag);
        let addr = Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], i as u8);
        let lan = format!("{}-lan", self.tag);
        ip(&["netns", "add", &netns]);
        self.hosts.push(netns.clone());
        let port = format!("p{i}");
        ip(&["-n", &netns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &lan]);
        ip(&["-n", &lan, "link", "set", &port, "master", "br0", "up"]);
        ip(&["-n", &netns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ip(&["-n", &netns, "link", "set", "eth0", "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        Host { netns, ip: addr }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&format!("{}-lan", self.tag))) {
            let _ = Command::new("ip").args(["netns", "delete", ns]).output();
        }
        let _ = Command::new("ip").args(["link", "delete", &self.tag]).output();
    }
}

impl Host {
    /// A command that runs `program` in this host's network namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.netns)).arg("--").arg(program);
        c
    }

    /// Runs `program ARGS` here and returns what it printed.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program).args(args).output().expect("nsenter (Debian package util-linux)")
    }

    /// `ip -4 route` of this host, as text.
    pub fn routes(&self) -> String {
        let out = Command::new("ip").args(["-n", &self.netns, "-4", "route"]).output().expect("ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

//! A real etcd cluster on loopback for the tests (Debian's etcd-server):
//! members with client and peer TLS from a CA the test makes, in the
//! test's temp dir, ended by pid when the test ends.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One member this test started.
pub struct Member {
    child: Option<Child>,
    /// Its client URL.
    pub client_url: String,
}

/// A cluster of members.
pub struct EtcdCluster {
    /// The members, in the order of [`EtcdCluster::endpoints`].
    pub members: Vec<Member>,
    /// The CA, client certificate and key (PEM files) clients use.
    pub ca: PathBuf,
    /// The client certificate.
    pub cert: PathBuf,
    /// The client key.
    pub key: PathBuf,
    /// Where the members keep their data.
    pub dir: tempfile::TempDir,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Whether etcd is installed; under `CI=true` its absence fails the test.
pub fn have_etcd() -> bool {
    let have = Command::new("etcd").arg("--version").output().is_ok_and(|o| o.status.success());
    if !have {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and etcd is missing (apt-get install etcd-server)");
        eprintln!("skipping: needs etcd (apt-get install etcd-server)");
    }
    have
}

impl EtcdCluster {
    /// Starts `n` members with TLS on loopback and waits until they listen.
    /// `None` (the test skips) when etcd is not installed, outside CI.
    pub fn start(n: usize) -> Option<Self> {
        if !have_etcd() {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = skiff_pki::ClusterPki::load_or_create(dir.path().join("pki")).expect("etcd CA");
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        pki.load_or_issue("member", |p| p.issue_peer("etcd", &names)).expect("member certificate");
        pki.load_or_issue("client", |p| p.issue_client("skiff", None)).expect("client certificate");
        let p = |f: &str| dir.path().join("pki").join(f);
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (port(), port())).collect();
        let initial: Vec<String> = ports.iter().enumerate().map(|(i, (_, peer))| format!("m{i}=https://127.0.0.1:{peer}")).collect();
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let client_url = format!("https://127.0.0.1:{client}");
            let log = std::fs::File::create(dir.path().join(format!("m{i}.log"))).expect("log");
            let mut cmd = Command::new("etcd");
            cmd.args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("m{i}")))
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &format!("https://127.0.0.1:{peer}"), "--initial-advertise-peer-urls", &format!("https://127.0.0.1:{peer}")])
                .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
                .args(["--experimental-watch-progress-notify-interval", "5s"]);
            for side in ["", "peer-"] {
                cmd.arg(format!("--{side}cert-file")).arg(p("member.crt"));
                cmd.arg(format!("--{side}key-file")).arg(p("member.key"));
                cmd.arg(format!("--{side}trusted-ca-file")).arg(p("ca.crt"));
                cmd.arg(format!("--{side}client-cert-auth"));
            }
            let child = cmd.stdout(Stdio::from(log.try_clone().expect("log"))).stderr(Stdio::from(log)).spawn().expect("spawn etcd");
            members.push(Member { child: Some(child), client_url });
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for m in &members {
            let addr = m.client_url.trim_start_matches("https://").to_string();
            while std::net::TcpStream::connect(&addr).is_err() {
                assert!(Instant::now() < deadline, "etcd member {addr} did not listen");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(Self { members, ca: p("ca.crt"), cert: p("client.crt"), key: p("client.key"), dir })
    }

    /// Every member's client URL, comma-separated.
    pub fn endpoints(&self) -> String {
        self.members.iter().map(|m| m.client_url.as_str()).collect::<Vec<_>>().join(",")
    }

    /// The `skiff server` flags that use this cluster.
    pub fn datastore_flags(&self) -> Vec<String> {
        vec![
            "--datastore-endpoint".into(),
            self.endpoints(),
            "--datastore-cafile".into(),
            self.ca.display().to_string(),
            "--datastore-certfile".into(),
            self.cert.display().to_string(),
            "--datastore-keyfile".into(),
            self.key.display().to_string(),
        ]
    }

    /// Kills member `i` (SIGKILL), as a machine that dies.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `etcdctl` against the cluster, with the client certificate.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoints())
            .arg("--cacert")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.cert)
            .arg("--key")
            .arg(&self.key)
            .args(args)
            .output()
            .expect("run etcdctl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

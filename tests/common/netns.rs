//! Network namespaces a test makes for itself, as hosts on one private
//! network: a "switch" namespace holding a bridge, and a namespace per host
//! joined to it by a veth pair, each host with an address in
//! [`SUBNET`]. Nothing is made in the machine's own namespace (the veths
//! are created in the switch and their far ends moved into the hosts), so
//! deleting the namespaces removes every link, route and packet filter rule
//! the test added; [`Netns`]'s `Drop` does it, on a failing test too. The
//! names carry the test process's pid and a counter, so parallel runs and
//! scenarios never meet.
//!
//! Processes and connections enter a host through [`Netns::run`]: each
//! namespace has a thread of its own that joined it (`setns(2)` moves only
//! the calling thread), and whatever that thread starts or connects to
//! lives there.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The hosts' network, private and only inside the namespaces: nothing
/// outside them can route to it or from it.
pub const SUBNET: &str = "10.77.0";

/// Panics with the reason unless the tests run as root (`make test` and CI
/// do): namespaces, veths, TUN devices and packet filters need it.
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "{what} needs root (network namespaces, TUN devices, iptables): run it as root, as `make test` and CI do"
    );
    for (program, package) in [
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("sysctl", "procps"),
    ] {
        super::require_program(program, package);
    }
}

/// One network namespace, deleted on drop. The processes started in it
/// must be stopped before (declare their guards before it).
pub struct Netns {
    pub name: String,
    /// The namespace's own thread (see [`Netns::run`]); `None` once
    /// stopped.
    agent: Option<(mpsc::Sender<Job>, std::thread::JoinHandle<()>)>,
}

/// Work for a namespace's thread.
type Job = Box<dyn FnOnce() + Send + 'static>;

impl Netns {
    pub fn add(name: &str) -> Netns {
        run_ok(Command::new("ip").args(["netns", "add", name]));
        // From here the guard deletes it, whatever fails next.
        let mut ns = Netns {
            name: name.to_owned(),
            agent: None,
        };
        let file = File::open(format!("/run/netns/{name}"))
            .unwrap_or_else(|e| panic!("open /run/netns/{name}: {e}"));
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns(2) on a namespace file we hold open; it moves
            // only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            let _ = ready_tx.send(
                (rc == 0)
                    .then_some(())
                    .ok_or_else(std::io::Error::last_os_error),
            );
            if rc == 0 {
                for job in rx {
                    job();
                }
            }
        });
        ns.agent = Some((tx, thread));
        let joined = ready_rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("its thread ended")));
        if let Err(e) = joined {
            panic!("setns into {name}: {e}");
        }
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on the namespace's own thread: its sockets, and the
    /// processes it spawns, are the namespace's. One thread for the
    /// namespace's whole life, not one per call: a child's parent-death
    /// signal (`cluster::procs::Spec` sets one) fires when the *thread*
    /// that forked it ends, so PostgreSQL or HAProxy started from a
    /// short-lived thread would die with it.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let job: Box<dyn FnOnce() + Send + '_> = Box::new(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = done_tx.send(out);
        });
        // SAFETY: `f` may borrow from the caller, so the job must not
        // outlive this call. It does not: we wait below until it has run
        // and sent its result, or until the thread dropped it unrun (the
        // channel closes only when the job, which owns `done_tx`, is
        // gone); either way nothing of it is left when we return.
        let job: Job = unsafe { std::mem::transmute(job) };
        let (tx, _) = self.agent.as_ref().expect("the namespace's thread");
        tx.send(job).expect("the namespace's thread runs");
        match done_rx.recv() {
            Ok(Ok(v)) => v,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => panic!("the thread of {} is gone", self.name),
        }
    }

    /// `argv` in the namespace (ip, iptables, sysctl), which must succeed.
    pub fn ok(&self, argv: &[&str]) {
        self.run(|| run_ok(Command::new(argv[0]).args(&argv[1..])));
    }

    /// `argv` in the namespace; whether it succeeded (for undoing what may
    /// already be gone).
    pub fn try_run(&self, argv: &[&str]) -> bool {
        self.run(|| {
            Command::new(argv[0])
                .args(&argv[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some((tx, thread)) = self.agent.take() {
            drop(tx);
            let _ = thread.join();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A host: its namespace and its address on the network.
pub struct Host {
    pub name: String,
    pub ip: String,
    pub ns: Netns,
}

/// Hosts joined by a bridge in a namespace of its own. Hosts drop before
/// the switch (field order).
pub struct Network {
    hosts: Vec<Host>,
    switch: Netns,
}

impl Network {
    /// `hosts` as (name, last byte of its address in [`SUBNET`]).
    pub fn new(hosts: &[(&str, u8)]) -> Network {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!(
            "vsnf{}x{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::SeqCst)
        );
        let switch = Netns::add(&format!("{prefix}-switch"));
        switch.ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        switch.ok(&["ip", "link", "set", "br0", "up"]);
        let mut net = Network {
            hosts: Vec::new(),
            switch,
        };
        for (i, &(name, byte)) in hosts.iter().enumerate() {
            let ns = Netns::add(&format!("{prefix}-{name}"));
            // The host's end is made here and moved into it at once: the
            // machine's own namespace never sees a link of the test's.
            let port = format!("p{i}");
            net.switch.ok(&[
                "ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns.name,
            ]);
            net.switch
                .ok(&["ip", "link", "set", &port, "master", "br0", "up"]);
            let ip = format!("{SUBNET}.{byte}");
            ns.ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            ns.ok(&["ip", "link", "set", "eth0", "up"]);
            net.hosts.push(Host {
                name: name.to_owned(),
                ip,
                ns,
            });
        }
        net
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }
}

/// Packets between two hosts dropped (both ways, by `iptables` in `from`'s
/// namespace: a partition, not a refusal) until dropped.
pub struct Partition<'a> {
    ns: &'a Netns,
    peer: String,
}

impl<'a> Partition<'a> {
    pub fn new(from: &'a Host, to: &Host) -> Partition<'a> {
        let p = Partition {
            ns: &from.ns,
            peer: to.ip.clone(),
        };
        for rule in p.rules() {
            let mut argv = vec!["iptables", "-I"];
            argv.extend(rule.iter().copied());
            p.ns.ok(&argv);
        }
        p
    }

    fn rules(&self) -> [[&str; 5]; 2] {
        let peer = self.peer.as_str();
        [
            ["OUTPUT", "-d", peer, "-j", "DROP"],
            ["INPUT", "-s", peer, "-j", "DROP"],
        ]
    }
}

impl Drop for Partition<'_> {
    fn drop(&mut self) {
        for rule in self.rules() {
            let mut argv = vec!["iptables", "-D"];
            argv.extend(rule.iter().copied());
            self.ns.try_run(&argv);
        }
    }
}

/// A slow, lossy path from a host to some of its peers, made by the test
/// because this machine's kernel has no `netem` (nor `prio`) qdisc: the
/// host's packets to `peers` are routed into a TUN device of its
/// namespace, a thread of the test holds each for `delay` (dropping a
/// `loss` fraction), then sends it on out of the host's `eth0` through a
/// raw socket whose mark selects a routing table without the detour. Real
/// packets on the real path, only later and fewer; the way back is
/// untouched (impair the peer too for both ways). Undone on drop: the TUN
/// device goes with its file, and its routes with it.
pub struct SlowPath<'a> {
    ns: &'a Netns,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Packets that took the slow path (sent on or dropped).
    packets: Arc<AtomicU64>,
}

/// The TUN device, the mark of the packets sent on, and their table.
const SLOW_DEV: &str = "slow0";
const DIRECT: &str = "0x77";
const DIRECT_MARK: u32 = 0x77;
/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

impl<'a> SlowPath<'a> {
    pub fn new(host: &'a Host, peers: &[&str], delay: Duration, loss: f64) -> SlowPath<'a> {
        let ns = &host.ns;
        // Opened on the namespace's thread, so that both are the
        // namespace's; used from any thread after.
        let (tun, raw) = ns.run(|| (open_tun(SLOW_DEV), raw_socket(DIRECT_MARK)));
        // Replies come back on eth0 while the route to their source
        // points at the TUN device: no reverse-path filter.
        for conf in ["all", "default", "eth0", SLOW_DEV] {
            ns.ok(&[
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{conf}.rp_filter=0"),
            ]);
        }
        ns.ok(&["ip", "link", "set", SLOW_DEV, "up"]);
        ns.ok(&["ip", "rule", "add", "fwmark", DIRECT, "lookup", DIRECT]);
        ns.ok(&[
            "ip",
            "route",
            "add",
            &format!("{SUBNET}.0/24"),
            "dev",
            "eth0",
            "table",
            DIRECT,
        ]);
        for peer in peers {
            ns.ok(&[
                "ip",
                "route",
                "add",
                &format!("{peer}/32"),
                "dev",
                SLOW_DEV,
                "src",
                &host.ip,
            ]);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let packets = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, packets) = (stop.clone(), packets.clone());
            std::thread::spawn(move || hold_and_forward(tun, raw, delay, loss, &stop, &packets))
        };
        SlowPath {
            ns,
            stop,
            thread: Some(thread),
            packets,
        }
    }

    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::SeqCst)
    }
}

impl Drop for SlowPath<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.ns
            .try_run(&["ip", "rule", "del", "fwmark", DIRECT, "lookup", DIRECT]);
        self.ns.try_run(&["ip", "route", "flush", "table", DIRECT]);
    }
}

/// A TUN device `name` (IP packets, no extra header), gone when the file
/// is closed.
fn open_tun(name: &str) -> OwnedFd {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("open /dev/net/tun");
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads an ifreq, which `req` is laid out as.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
    assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    file.into()
}

/// A raw IP socket (the packets carry their own header) whose packets
/// carry `mark`.
fn raw_socket(mark: u32) -> OwnedFd {
    // SAFETY: plain socket(2) and setsockopt(2) calls on a new descriptor,
    // owned at once.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let rc = libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_MARK: {}", std::io::Error::last_os_error());
        fd
    }
}

/// How often the forwarding thread looks at its stop flag when idle.
const SLOW_TICK: Duration = Duration::from_millis(20);

/// Reads packets from `tun`, holds each for `delay`, sends it to its
/// destination through `raw`; drops `loss` of them; until `stop`.
fn hold_and_forward(
    tun: OwnedFd,
    raw: OwnedFd,
    delay: Duration,
    loss: f64,
    stop: &AtomicBool,
    packets: &AtomicU64,
) {
    let mut held: std::collections::VecDeque<(Instant, Vec<u8>)> = Default::default();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            let (_, p) = held.pop_front().unwrap();
            send_raw(&raw, &p);
        }
        let wait = held
            .front()
            .map_or(SLOW_TICK, |(due, _)| due.saturating_duration_since(now))
            .min(SLOW_TICK);
        let mut pfd = libc::pollfd {
            fd: tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, ours; read(2) into a buffer of that length.
        let n = unsafe {
            if libc::poll(&mut pfd, 1, wait.as_millis() as libc::c_int) <= 0 {
                continue;
            }
            libc::read(tun.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
        };
        if n < 20 {
            continue;
        }
        packets.fetch_add(1, Ordering::SeqCst);
        if rand::random::<f64>() >= loss {
            held.push_back((Instant::now() + delay, buf[..n as usize].to_vec()));
        }
    }
    // Healed: what was on its way arrives (early), as on a real link.
    for (_, p) in held {
        send_raw(&raw, &p);
    }
}

/// One IPv4 packet, header and all, to the destination its header names.
fn send_raw(raw: &OwnedFd, packet: &[u8]) {
    let dst = [packet[16], packet[17], packet[18], packet[19]];
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sendto(2) of our buffer to a sockaddr_in of the right size.
    // A failure is a lost packet, which the path may do anyway.
    unsafe {
        libc::sendto(
            raw.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
    }
}

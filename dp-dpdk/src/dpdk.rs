//! Safe wrappers over the DPDK calls the host makes. This is the crate's only
//! module with `unsafe`; every block says why it is sound.
//!
//! # Contract
//!
//! * [`Eal::init`] once per process, before anything else; [`Eal::cleanup`]
//!   after every port is closed and every worker lcore has returned.
//! * An [`Mbuf`] owns one packet buffer: dropping it frees it, transmitting it
//!   hands it to the driver. [`MbufBatch`] is a fixed-capacity array of them that
//!   RX fills and TX drains; what TX does not take stays owned (and is freed on
//!   drop or [`MbufBatch::clear`]).
//! * An [`RxQueue`] / [`TxQueue`] is a (port, queue) pair handed out once by
//!   [`Port::take_queues`]; DPDK requires each queue to be polled by one lcore at
//!   a time, which ownership (no `Clone`) enforces.

use std::ffi::{c_int, c_void, CStr, CString};
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use marllb_core::pipeline::Packet;
use marllb_dpdk_sys as sys;

/// A failed DPDK call.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    /// A DPDK function returned an error.
    #[error("{call} failed: {msg} ({code})")]
    Call {
        /// The function (and its subject).
        call: String,
        /// The error number (positive errno).
        code: i32,
        /// `rte_strerror` of it.
        msg: String,
    },
    /// An argument could not be passed to DPDK.
    #[error("{0}")]
    Invalid(String),
}

fn strerror(code: i32) -> String {
    // SAFETY: rte_strerror accepts any int and returns a pointer to a static or
    // thread-local NUL-terminated string; we copy it out immediately.
    unsafe {
        let p = sys::rte_strerror(code);
        if p.is_null() {
            return format!("error {code}");
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

fn rte_errno() -> i32 {
    // SAFETY: reads the calling thread's rte_errno; no preconditions.
    unsafe { sys::marllb_errno() }
}

/// Turns a negative-errno return into an error.
fn check(ret: c_int, call: impl FnOnce() -> String) -> Result<c_int, DpdkError> {
    if ret < 0 {
        Err(DpdkError::Call {
            call: call(),
            code: -ret,
            msg: strerror(-ret),
        })
    } else {
        Ok(ret)
    }
}

/// The initialised Environment Abstraction Layer.
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialises the EAL with `args` (`args[0]` is the program name). Returns
    /// how many arguments the EAL consumed. Can succeed only once per process.
    pub fn init(args: &[String]) -> Result<(Eal, usize), DpdkError> {
        // The EAL may keep pointers into argv (it does for some options), so the
        // strings live for the rest of the process.
        let mut argv: Vec<*mut std::ffi::c_char> = Vec::with_capacity(args.len() + 1);
        for a in args {
            let c = CString::new(a.as_str())
                .map_err(|_| DpdkError::Invalid(format!("EAL argument {a:?} contains NUL")))?;
            argv.push(c.into_raw());
        }
        let argc = c_int::try_from(argv.len())
            .map_err(|_| DpdkError::Invalid("too many EAL arguments".into()))?;
        argv.push(std::ptr::null_mut());
        let argv = Box::leak(argv.into_boxed_slice());
        // SAFETY: argv holds argc valid NUL-terminated strings followed by NULL,
        // all leaked so they outlive the EAL; rte_eal_init is called from the main
        // thread, and a second call fails with an error rather than misbehaving.
        let ret = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            let code = rte_errno();
            return Err(DpdkError::Call {
                call: "rte_eal_init".into(),
                code,
                msg: strerror(code),
            });
        }
        Ok((Eal { _private: () }, ret as usize))
    }

    /// The DPDK version string.
    pub fn version() -> String {
        // SAFETY: rte_version returns a pointer to a static NUL-terminated string.
        unsafe {
            let p = sys::rte_version();
            if p.is_null() {
                return String::from("unknown");
            }
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }

    /// Worker lcores (every enabled lcore except the main one), in order.
    pub fn worker_lcores(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = u32::MAX; // -1: rte_get_next_lcore starts after it
        loop {
            // SAFETY: the EAL is initialised (we hold `Eal`); the call only reads
            // the lcore configuration.
            i = unsafe { sys::rte_get_next_lcore(i, 1, 0) };
            if i >= sys::RTE_MAX_LCORE {
                return out;
            }
            out.push(i);
        }
    }

    /// Nanoseconds per tick of the time stamp counter [`tsc`] reads, from
    /// the TSC frequency the EAL measured at init. 0.0 where there is no
    /// counter to read (not x86-64) or no frequency: a
    /// [`FrameClock`](marllb_host::clock::FrameClock) given 0.0 reads its
    /// reference clock every time instead.
    pub fn ns_per_tsc_tick(&self) -> f64 {
        // SAFETY: reads the frequency the EAL set at init (it is up: `self`).
        let hz = unsafe { sys::rte_get_tsc_hz() };
        if cfg!(target_arch = "x86_64") && hz != 0 {
            1e9 / hz as f64
        } else {
            0.0
        }
    }

    /// The socket (NUMA node) of the calling lcore.
    pub fn socket_id(&self) -> i32 {
        // SAFETY: no preconditions once the EAL is up.
        unsafe { sys::rte_socket_id() as i32 }
    }

    /// Runs `f` on worker lcore `lcore`; collect its result with
    /// [`Eal::wait_lcore`].
    pub fn launch<F>(&self, lcore: u32, f: F) -> Result<(), DpdkError>
    where
        F: FnOnce() -> i32 + Send + 'static,
    {
        type Job = Box<dyn FnOnce() -> i32 + Send>;
        extern "C" fn trampoline(arg: *mut c_void) -> c_int {
            // SAFETY: `arg` is the Box<Job> leaked by `launch` below, passed to
            // exactly one lcore launch; ownership comes back here exactly once.
            let job: Box<Job> = unsafe { Box::from_raw(arg.cast::<Job>()) };
            job()
        }
        let job: Box<Job> = Box::new(Box::new(f));
        let arg = Box::into_raw(job).cast::<c_void>();
        // SAFETY: `trampoline` has the lcore_function_t signature; `arg` stays
        // valid until the trampoline takes it back. On failure the function was
        // not started and we reclaim the box.
        let ret = unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
        if ret < 0 {
            // SAFETY: the launch failed, so the trampoline never ran and `arg` is
            // still the unique pointer from Box::into_raw.
            drop(unsafe { Box::from_raw(arg.cast::<Job>()) });
            return check(ret, || format!("rte_eal_remote_launch(lcore {lcore})")).map(|_| ());
        }
        Ok(())
    }

    /// Waits for lcore `lcore` to finish its job; returns the job's value.
    pub fn wait_lcore(&self, lcore: u32) -> i32 {
        // SAFETY: called on the main lcore with an lcore id from worker_lcores.
        unsafe { sys::rte_eal_wait_lcore(lcore) }
    }

    /// Releases the EAL's resources. Every port must be closed and every worker
    /// lcore finished.
    pub fn cleanup(self) {
        // SAFETY: consumes the (only) Eal; the caller has closed ports and waited
        // for lcores as documented.
        unsafe {
            sys::rte_eal_cleanup();
        }
    }
}

/// A packet-buffer pool.
#[derive(Debug)]
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
}

// SAFETY: DPDK mempools are multi-producer / multi-consumer safe (ring_mp_mc);
// the pointer is only used through thread-safe DPDK calls.
unsafe impl Send for Mempool {}
// SAFETY: as above: every operation on the pool through this handle is MT-safe.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `n` mbufs with `data_room` bytes each (headroom included).
    pub fn pktmbuf(
        _eal: &Eal,
        name: &str,
        n: u32,
        cache: u32,
        data_room: u16,
        socket: i32,
    ) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name)
            .map_err(|_| DpdkError::Invalid(format!("pool name {name:?} contains NUL")))?;
        // SAFETY: the EAL is up (we borrow `Eal`); `cname` is a valid C string that
        // DPDK copies.
        let p =
            unsafe { sys::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, socket) };
        NonNull::new(p).map(|ptr| Mempool { ptr }).ok_or_else(|| {
            let code = rte_errno();
            DpdkError::Call {
                call: format!("rte_pktmbuf_pool_create({name}, n={n})"),
                code,
                msg: strerror(code),
            }
        })
    }

    /// Mbufs currently in the pool.
    pub fn available(&self) -> u32 {
        // SAFETY: the pool pointer is valid for our lifetime.
        unsafe { sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Allocates one mbuf (empty frame, default headroom).
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool pointer is valid; the shim returns NULL or an mbuf we
        // now own exclusively.
        NonNull::new(unsafe { sys::marllb_pktmbuf_alloc(self.ptr.as_ptr()) }).map(Mbuf)
    }

    fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.ptr.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: every port using the pool has been closed by the owner before
        // the pool is dropped (main drops ports first); the pointer is valid.
        unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) }
    }
}

/// One owned packet buffer (single segment).
#[repr(transparent)]
#[derive(Debug)]
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an Mbuf is exclusively owned; moving it to another lcore moves the
// ownership (DPDK mbufs are not tied to the allocating thread).
unsafe impl Send for Mbuf {}

impl Mbuf {
    fn raw(&self) -> &sys::rte_mbuf {
        // SAFETY: we own a valid mbuf for as long as self lives.
        unsafe { self.0.as_ref() }
    }

    fn raw_mut(&mut self) -> &mut sys::rte_mbuf {
        // SAFETY: as in `raw`, and `&mut self` makes the access exclusive.
        unsafe { self.0.as_mut() }
    }

    /// True when the packet is in one segment (the only kind the host handles).
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        let m = self.raw();
        m.nb_segs == 1 && m.pkt_len == u32::from(m.data_len)
    }

    /// The whole data room of the first segment (headroom included).
    #[inline]
    fn room_mut(&mut self) -> &mut [u8] {
        let m = self.raw_mut();
        let (addr, len) = (m.buf_addr.cast::<u8>(), usize::from(m.buf_len));
        if addr.is_null() {
            return &mut [];
        }
        // SAFETY: buf_addr points to buf_len bytes owned by this mbuf (DPDK's
        // mbuf invariant); `&mut self` gives us exclusive access for the borrow.
        unsafe { std::slice::from_raw_parts_mut(addr, len) }
    }

    /// The frame bytes.
    pub fn data(&self) -> &[u8] {
        let m = self.raw();
        let (off, len) = (usize::from(m.data_off), usize::from(m.data_len));
        if m.buf_addr.is_null() || off + len > usize::from(m.buf_len) {
            return &[];
        }
        // SAFETY: the range lies inside the buf_len bytes at buf_addr (checked
        // above), which this mbuf owns.
        unsafe { std::slice::from_raw_parts(m.buf_addr.cast::<u8>().add(off), len) }
    }

    /// A pipeline view of the mbuf: the whole buffer, the frame at `data_off`.
    #[inline]
    pub fn packet(&mut self) -> Packet<'_> {
        let m = self.raw();
        let (start, len) = (usize::from(m.data_off), usize::from(m.data_len));
        Packet::new(self.room_mut(), start, len)
    }

    /// Sets the frame to `room[start..start + len]` (after the pipeline moved it).
    /// Returns false (and changes nothing) if that does not fit the buffer.
    #[inline]
    pub fn set_frame(&mut self, start: usize, len: usize) -> bool {
        let m = self.raw_mut();
        match (u16::try_from(start), u16::try_from(len)) {
            (Ok(s), Ok(l)) if usize::from(s) + usize::from(l) <= usize::from(m.buf_len) => {
                m.data_off = s;
                m.data_len = l;
                m.pkt_len = u32::from(l);
                true
            }
            _ => false,
        }
    }

    /// Copies `frame` into the mbuf at the default headroom (for tests/tools).
    pub fn write_frame(&mut self, frame: &[u8]) -> bool {
        // SAFETY: no preconditions.
        let headroom = usize::from(unsafe { sys::marllb_pktmbuf_headroom() });
        let Some(dst) = self.room_mut().get_mut(headroom..headroom + frame.len()) else {
            return false;
        };
        dst.copy_from_slice(frame);
        self.set_frame(headroom, frame.len())
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; after this it is back in its pool and the
        // pointer is never used again.
        unsafe { sys::marllb_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// Up to `N` owned mbufs, filled by RX and drained by TX.
pub struct MbufBatch<const N: usize> {
    len: usize,
    bufs: [MaybeUninit<Mbuf>; N],
}

impl<const N: usize> std::fmt::Debug for MbufBatch<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MbufBatch").field("len", &self.len).finish()
    }
}

impl<const N: usize> Default for MbufBatch<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> MbufBatch<N> {
    const CHECK: () = assert!(N > 0 && N <= u16::MAX as usize);

    /// An empty batch.
    pub fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CHECK;
        Self {
            len: 0,
            bufs: [const { MaybeUninit::uninit() }; N],
        }
    }

    /// Number of mbufs held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when full.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == N
    }

    /// Adds an mbuf; hands it back when the batch is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        match self.bufs.get_mut(self.len) {
            Some(slot) => {
                slot.write(m);
                self.len += 1;
                Ok(())
            }
            None => Err(m),
        }
    }

    /// The held mbufs.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        // SAFETY: the first `len` slots are initialised (push/rx maintain it), and
        // MaybeUninit<Mbuf> has Mbuf's layout.
        unsafe { std::slice::from_raw_parts_mut(self.bufs.as_mut_ptr().cast::<Mbuf>(), self.len) }
    }

    /// Moves every mbuf out, in order, to `f` (with its index); leaves the batch
    /// empty.
    #[inline]
    pub fn drain(&mut self, mut f: impl FnMut(usize, Mbuf)) {
        let n = self.len;
        // Empty first: if `f` panicked the remaining mbufs would leak, never be
        // freed twice.
        self.len = 0;
        for i in 0..n {
            // SAFETY: slot i < n was initialised, and with len = 0 it is read
            // exactly once here.
            let m = unsafe { self.bufs[i].assume_init_read() };
            f(i, m);
        }
    }

    /// Frees every held mbuf.
    pub fn clear(&mut self) {
        if self.len == 0 {
            return;
        }
        let n = self.len as u32;
        self.len = 0;
        // SAFETY: the first n slots hold owned mbufs (repr(transparent) over the
        // raw pointer); with len = 0 they are never used again, so the bulk free
        // takes ownership of each exactly once.
        unsafe {
            sys::rte_pktmbuf_free_bulk(self.bufs.as_mut_ptr().cast::<*mut sys::rte_mbuf>(), n)
        }
    }

    fn raw_ptr(&mut self) -> *mut *mut sys::rte_mbuf {
        self.bufs.as_mut_ptr().cast::<*mut sys::rte_mbuf>()
    }
}

impl<const N: usize> Drop for MbufBatch<N> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The receive side of one (port, queue).
#[derive(Debug)]
pub struct RxQueue {
    port: u16,
    queue: u16,
}

/// The transmit side of one (port, queue).
#[derive(Debug)]
pub struct TxQueue {
    port: u16,
    queue: u16,
}

// SAFETY: a queue handle is just ids; it is unique (not Clone), so moving it to
// another lcore keeps "one lcore per queue".
unsafe impl Send for RxQueue {}
// SAFETY: as for RxQueue.
unsafe impl Send for TxQueue {}

impl RxQueue {
    /// The port id.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Receives into the free space of `batch`; returns how many arrived.
    #[inline]
    pub fn rx_burst<const N: usize>(&mut self, batch: &mut MbufBatch<N>) -> usize {
        let free = (N - batch.len) as u16;
        if free == 0 {
            return 0;
        }
        let base = batch.len;
        // SAFETY: the port is started and this queue is polled only here (unique
        // handle); the pointer addresses `free` uninitialised slots after the
        // held ones, which the driver fills with owned mbufs.
        let n =
            unsafe { sys::marllb_rx_burst(self.port, self.queue, batch.raw_ptr().add(base), free) };
        let n = usize::from(n.min(free));
        batch.len += n;
        n
    }
}

impl TxQueue {
    /// The port id.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Hands the batch to the driver; returns how many it took. Those leave the
    /// batch; the rest move to its front and stay owned.
    #[inline]
    pub fn tx_burst<const N: usize>(&mut self, batch: &mut MbufBatch<N>) -> usize {
        let n = batch.len as u16;
        if n == 0 {
            return 0;
        }
        // SAFETY: the port is started and this queue is used only here; the first
        // n slots hold owned mbufs whose ownership passes to the driver for the
        // first `sent` of them.
        let sent = unsafe { sys::marllb_tx_burst(self.port, self.queue, batch.raw_ptr(), n) };
        let sent = usize::from(sent.min(n));
        let rest = batch.len - sent;
        if sent > 0 && rest > 0 {
            let base = batch.bufs.as_mut_ptr();
            // SAFETY: slots [sent, len) still own mbufs; they move to [0, rest)
            // inside the same array (ptr::copy allows overlap), and the moved-from
            // slots are beyond the new len, so nothing is owned twice.
            unsafe { std::ptr::copy(base.add(sent), base, rest) };
        }
        batch.len = rest;
        sent
    }
}

/// Port counters (from the driver).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct PortStats {
    /// Packets received.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// RX drops because no descriptor / mbuf was free.
    pub imissed: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Transmit errors.
    pub oerrors: u64,
    /// RX mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// How to set up a port.
#[derive(Clone, Debug)]
pub struct PortSetup {
    /// RX and TX queues (one per worker).
    pub queues: u16,
    /// RX descriptors per queue.
    pub rx_desc: u16,
    /// TX descriptors per queue.
    pub tx_desc: u16,
    /// MTU to set, if any.
    pub mtu: Option<u16>,
    /// Enable promiscuous mode.
    pub promiscuous: bool,
}

/// A configured, started Ethernet port.
#[derive(Debug)]
pub struct Port {
    id: u16,
    name: String,
    mac: [u8; 6],
    rss: bool,
    queues: u16,
    started: bool,
    taken: bool,
}

impl Port {
    /// Number of ports DPDK found (physical and virtual).
    pub fn count(_eal: &Eal) -> u16 {
        // SAFETY: the EAL is up.
        unsafe { sys::rte_eth_dev_count_avail() }
    }

    /// Configures port `id` with `setup.queues` RX/TX queue pairs fed from `pool`,
    /// RSS over IP/TCP/UDP when the port supports it and there is more than one
    /// queue, then starts it.
    pub fn start(
        _eal: &Eal,
        id: u16,
        setup: &PortSetup,
        pool: &Mempool,
    ) -> Result<Port, DpdkError> {
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: `info` is a valid, writable rte_eth_dev_info.
        check(unsafe { sys::rte_eth_dev_info_get(id, &mut info) }, || {
            format!("rte_eth_dev_info_get(port {id})")
        })?;
        let name = if info.driver_name.is_null() {
            String::from("?")
        } else {
            // SAFETY: driver_name is a static NUL-terminated string of the driver.
            unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        let q = setup.queues.max(1);
        if q > info.max_rx_queues || q > info.max_tx_queues {
            return Err(DpdkError::Invalid(format!(
                "port {id} ({name}) supports {} RX / {} TX queues, {q} needed (one per worker lcore)",
                info.max_rx_queues, info.max_tx_queues
            )));
        }
        let mut conf = sys::rte_eth_conf::default();
        // SAFETY: no preconditions.
        let want = unsafe { sys::marllb_rss_hf_ip_tcp_udp() };
        let rss_hf = info.flow_type_rss_offloads & want;
        let rss = q > 1 && rss_hf != 0;
        if rss {
            conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
            conf.rx_adv_conf.rss_conf.rss_key = std::ptr::null_mut();
        }
        // SAFETY: `conf` is a valid configuration that DPDK copies.
        let ret = unsafe { sys::rte_eth_dev_configure(id, q, q, &conf) };
        check(ret, || {
            format!("rte_eth_dev_configure(port {id}, {q} queues)")
        })?;
        let (mut nrx, mut ntx) = (setup.rx_desc, setup.tx_desc);
        // SAFETY: both pointers are valid, writable u16s.
        let ret = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nrx, &mut ntx) };
        check(ret, || {
            format!("rte_eth_dev_adjust_nb_rx_tx_desc(port {id})")
        })?;
        // SAFETY: the port was configured above; a negative id means "any".
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        let socket = u32::try_from(socket).unwrap_or(0);
        let null_rx = std::ptr::null();
        let null_tx = std::ptr::null();
        for qi in 0..q {
            // SAFETY: configured port, queue index < q, NULL rxconf = driver
            // defaults, and the pool outlives the port (see Mempool's Drop).
            let ret =
                unsafe { sys::rte_eth_rx_queue_setup(id, qi, nrx, socket, null_rx, pool.as_ptr()) };
            check(ret, || {
                format!("rte_eth_rx_queue_setup(port {id}, queue {qi})")
            })?;
            // SAFETY: as above for the TX side (NULL txconf = driver defaults).
            let ret = unsafe { sys::rte_eth_tx_queue_setup(id, qi, ntx, socket, null_tx) };
            check(ret, || {
                format!("rte_eth_tx_queue_setup(port {id}, queue {qi})")
            })?;
        }
        if let Some(mtu) = setup.mtu {
            // SAFETY: configured port. A driver that cannot change its MTU (most
            // virtual devices) is not an error for us: the pipeline enforces the
            // configured MTU itself.
            let _ = unsafe { sys::rte_eth_dev_set_mtu(id, mtu) };
        }
        // SAFETY: every queue is set up.
        check(unsafe { sys::rte_eth_dev_start(id) }, || {
            format!("rte_eth_dev_start(port {id})")
        })?;
        if setup.promiscuous {
            // SAFETY: started port. Some virtual devices do not support it; that
            // is not fatal (they deliver everything anyway).
            let _ = unsafe { sys::rte_eth_promiscuous_enable(id) };
        }
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: `addr` is a valid, writable rte_ether_addr.
        let _ = unsafe { sys::rte_eth_macaddr_get(id, &mut addr) };
        Ok(Port {
            id,
            name,
            mac: addr.addr_bytes,
            rss,
            queues: q,
            started: true,
            taken: false,
        })
    }

    /// The port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The driver name.
    pub fn driver(&self) -> &str {
        &self.name
    }

    /// The port's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// True when RSS spreads flows over the queues.
    pub fn rss(&self) -> bool {
        self.rss
    }

    /// The (RX, TX) queue handles, one pair per queue; only the first call
    /// returns them.
    pub fn take_queues(&mut self) -> Vec<(RxQueue, TxQueue)> {
        if self.taken {
            return Vec::new();
        }
        self.taken = true;
        (0..self.queues)
            .map(|q| {
                (
                    RxQueue {
                        port: self.id,
                        queue: q,
                    },
                    TxQueue {
                        port: self.id,
                        queue: q,
                    },
                )
            })
            .collect()
    }

    /// Driver counters.
    pub fn stats(&self) -> PortStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: `s` is a valid, writable rte_eth_stats.
        if unsafe { sys::rte_eth_stats_get(self.id, &mut s) } != 0 {
            return PortStats::default();
        }
        PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Stops and closes the port. Worker lcores must no longer poll it.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.started {
            self.started = false;
            // SAFETY: the port is started; the owner guarantees no lcore polls it
            // any more (workers are joined before ports are closed).
            unsafe {
                sys::rte_eth_dev_stop(self.id);
                sys::rte_eth_dev_close(self.id);
            }
        }
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The time stamp counter (`rte_rdtsc`); 0 where there is none, with
/// [`Eal::ns_per_tsc_tick`] 0.0 there too.
#[inline(always)]
pub fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC is baseline on x86-64; it reads a counter, nothing
        // in memory.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

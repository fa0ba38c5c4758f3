/* chaos-inject recording programs: one-way packet latency, TCP RTT, log-linear histograms, raw events.
 *
 * Load-time configuration (bcc cflags):
 *   CR_RING_PAGES   ring buffer size in pages (power of two)
 *   CR_MAX_STAMPS   capacity of the LRU table of stamped packets
 *   CR_L2_LEN       bytes before the IP header at tc (14 on Ethernet/veth)
 *
 * Placements (see injector/record/oneway.py for which engine and direction each one sees):
 *   cr_stamp      tc (tcx) egress of the sender's interface: remember (packet key -> now)
 *   cr_match_tc   tc (tcx) ingress of the receiver's interface: before the receiver's netfilter hooks
 *   cr_match_sk   cgroup_skb/ingress on a cgroup holding the receiving socket: after PREROUTING/INPUT,
 *                 so it sees packets held there (the userspace engine's ingress direction)
 *   cr_sockops    sock_ops on a cgroup: RTT samples (BPF_SOCK_OPS_RTT_CB) of the targeted TCP flows
 *                 (the kernel calls it once per RTT window, not for every ACK)
 * Every sample goes into hist[rule][phase] and, if the filter asks for events, into the ring buffer; a
 * failed reservation is counted in counters.lost, never hidden.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>

#include "record_abi.h"

#ifndef CR_RING_PAGES
#define CR_RING_PAGES 256
#endif
#ifndef CR_MAX_STAMPS
#define CR_MAX_STAMPS 65536
#endif
#ifndef CR_L2_LEN
#define CR_L2_LEN 14
#endif
/* Raw events between two forced wakeups of the reader (a power of two): ~128 KiB of ring */
#define CR_WAKE_EVERY 4096
#define CR_HIST_SLOTS (CR_MAX_FILTERS * CR_PHASES * CR_HIST_BUCKETS)
#define BPF_F_MMAPABLE_ (1U << 10)

BPF_ARRAY(filters, struct cr_filter, CR_MAX_FILTERS);
BPF_ARRAY(phase, __u32, 1);                       /* current phase, set from userspace */
BPF_PERCPU_ARRAY(counters, struct cr_counters, CR_MAX_FILTERS);
BPF_TABLE("lru_hash", struct cr_pkt_key, struct cr_stamp, stamps, CR_MAX_STAMPS);
/* mmapable so userspace reads the whole histogram as one numpy view; atomic adds across CPUs */
BPF_F_TABLE("array", int, __u64, hist, CR_HIST_SLOTS, BPF_F_MMAPABLE_);
BPF_RINGBUF_OUTPUT(events, CR_RING_PAGES);

/* Bucket of a value: exact below 256, then 128 linear sub-buckets per power of two. */
static __always_inline __u32 cr_bucket(__u64 v)
{
    if (v < 2 * CR_HIST_SUB)
        return (__u32)v;
    __u32 msb = 0;
    __u64 x = v;
    if (x >> 32) { x >>= 32; msb += 32; }
    if (x >> 16) { x >>= 16; msb += 16; }
    if (x >> 8) { x >>= 8; msb += 8; }
    if (x >> 4) { x >>= 4; msb += 4; }
    if (x >> 2) { x >>= 2; msb += 2; }
    if (x >> 1) { msb += 1; }
    if (msb > CR_HIST_MAX_MSB)
        return CR_HIST_BUCKETS - 1;
    __u32 e = msb - CR_HIST_SUB_BITS;
    return e * CR_HIST_SUB + (__u32)(v >> e);
}

static __always_inline struct cr_counters *cr_counters_of(__u32 rule)
{
    int index = rule;
    return counters.lookup(&index);
}

/* One sample: histogram always, raw event if asked for. */
static __always_inline void cr_sample(__u32 rule, __u32 flags, __u64 now, __u64 latency, __u32 aux)
{
    if (rule >= CR_MAX_FILTERS)
        return;
    int zero = 0;
    __u32 *ph = phase.lookup(&zero);
    __u32 p = ph ? *ph : 0;
    if (p >= CR_PHASES)
        p = CR_PHASES - 1;
    int slot = (rule * CR_PHASES + p) * CR_HIST_BUCKETS + cr_bucket(latency);
    __u64 *count = hist.lookup(&slot);
    if (count)
        __sync_fetch_and_add(count, 1);
    struct cr_counters *c = cr_counters_of(rule);
    if (c)
        c->matched++;
    if (!(flags & CR_F_EVENTS))
        return;
    struct cr_event *ev = events.ringbuf_reserve(sizeof(struct cr_event));
    if (!ev) {
        if (c)
            c->lost++;
        return;
    }
    ev->t_ns = now;
    ev->latency_ns = latency;
    ev->rule = rule;
    ev->aux = aux;
    /* No wakeup per event (an irq_work each time the reader has caught up): one every CR_WAKE_EVERY events of a
     * rule on a CPU; the reader also wakes by its own timeout, so a trickle is read too. */
    __u64 n = c ? c->events++ : 0;
    events.ringbuf_submit(ev, (n & (CR_WAKE_EVERY - 1)) ? BPF_RB_NO_WAKEUP : BPF_RB_FORCE_WAKEUP);
}

/* Packet key from the IP header at l3; 0 on success. Fragments and IPv6 extension headers are skipped. */
static __always_inline int cr_parse(struct __sk_buff *skb, __u32 l3, __u8 family, struct cr_pkt_key *k)
{
    __u32 l4;
    __u32 end;
    k->family = family;
    if (family == 4) {
        struct iphdr ip;
        if (bpf_skb_load_bytes(skb, l3, &ip, sizeof(ip)))
            return -1;
        if (ip.frag_off & bpf_htons(0x1fff))
            return -1;
        k->proto = ip.protocol;
        k->saddr[0] = ip.saddr;
        k->daddr[0] = ip.daddr;
        k->ip_len = bpf_ntohs(ip.tot_len);
        k->ident = bpf_ntohs(ip.id);
        l4 = l3 + ip.ihl * 4;
        end = l3 + bpf_ntohs(ip.tot_len);
    } else {
        struct ipv6hdr ip6;
        if (bpf_skb_load_bytes(skb, l3, &ip6, sizeof(ip6)))
            return -1;
        k->proto = ip6.nexthdr;
        __builtin_memcpy(k->saddr, &ip6.saddr, 16);
        __builtin_memcpy(k->daddr, &ip6.daddr, 16);
        k->ip_len = bpf_ntohs(ip6.payload_len) + 40;
        l4 = l3 + 40;
        end = l4 + bpf_ntohs(ip6.payload_len);
    }
    __u32 payload;
    if (k->proto == IPPROTO_UDP) {
        struct udphdr udp;
        if (bpf_skb_load_bytes(skb, l4, &udp, sizeof(udp)))
            return -1;
        k->sport = udp.source;
        k->dport = udp.dest;
        payload = l4 + sizeof(udp);
    } else if (k->proto == IPPROTO_TCP) {
        struct tcphdr tcp;
        if (bpf_skb_load_bytes(skb, l4, &tcp, sizeof(tcp)))
            return -1;
        k->sport = tcp.source;
        k->dport = tcp.dest;
        k->ident = bpf_ntohl(tcp.seq);
        k->payload = tcp.ack_seq;
        payload = l4 + tcp.doff * 4;
    } else {
        return -1;
    }
    /* GSO packets on veth: the length seen on both sides is the super-packet's, so it still matches */
    if (end >= payload + 8)
        bpf_skb_load_bytes(skb, payload, &k->payload, 8);
    return 0;
}

static __always_inline int cr_addr_eq(const __u32 *want, const __u32 *have, __u8 family)
{
    if (family == 4)
        return want[0] == 0 || want[0] == have[0];
    if ((want[0] | want[1] | want[2] | want[3]) == 0)
        return 1;
    return want[0] == have[0] && want[1] == have[1] && want[2] == have[2] && want[3] == have[3];
}

/* Index of the first filter matching the packet, or -1. */
static __always_inline int cr_find(const struct cr_pkt_key *k, __u32 *flags)
{
#pragma unroll
    for (int i = 0; i < CR_MAX_FILTERS; i++) {
        int index = i;
        struct cr_filter *f = filters.lookup(&index);
        if (!f || f->family == 0)
            continue;
        if (f->family != k->family || (f->proto && f->proto != k->proto))
            continue;
        if ((f->sport && f->sport != k->sport) || (f->dport && f->dport != k->dport))
            continue;
        if (!cr_addr_eq(f->saddr, k->saddr, k->family) || !cr_addr_eq(f->daddr, k->daddr, k->family))
            continue;
        *flags = f->flags;
        return i;
    }
    return -1;
}

static __always_inline __u8 cr_family_of(struct __sk_buff *skb)
{
    if (skb->protocol == bpf_htons(ETH_P_IP))
        return 4;
    if (skb->protocol == bpf_htons(ETH_P_IPV6))
        return 6;
    return 0;
}

int cr_stamp(struct __sk_buff *skb)
{
    struct cr_pkt_key k = {};
    __u8 family = cr_family_of(skb);
    if (!family || cr_parse(skb, CR_L2_LEN, family, &k))
        return TC_ACT_UNSPEC;
    __u32 flags = 0;
    int rule = cr_find(&k, &flags);
    if (rule < 0)
        return TC_ACT_UNSPEC;
    struct cr_stamp s = {.t_ns = bpf_ktime_get_ns(), .rule = rule, .flags = flags};
    struct cr_counters *c = cr_counters_of(rule);
    if (stamps.update(&k, &s)) {
        if (c)
            c->stamp_full++;
    } else if (c) {
        c->stamped++;
    }
    return TC_ACT_UNSPEC;
}

static __always_inline void cr_match(struct __sk_buff *skb, __u32 l3)
{
    struct cr_pkt_key k = {};
    __u8 family = cr_family_of(skb);
    if (!family || cr_parse(skb, l3, family, &k))
        return;
    struct cr_stamp *s = stamps.lookup(&k);
    if (!s)
        return;
    __u64 now = bpf_ktime_get_ns();
    __u64 t = s->t_ns;
    __u32 rule = s->rule, flags = s->flags;
    stamps.delete(&k);  /* a second copy (duplicate) is not a second sample */
    cr_sample(rule, flags, now, now > t ? now - t : 0, k.ip_len);
}

int cr_match_tc(struct __sk_buff *skb)
{
    cr_match(skb, CR_L2_LEN);
    return TC_ACT_UNSPEC;
}

int cr_match_sk(struct __sk_buff *skb)
{
    cr_match(skb, 0);  /* cgroup_skb: data starts at the IP header */
    return 1;          /* always let the packet through */
}

/* sock_ops: the local end is the flow's source (client in our cgroup) or its destination (server). */
static __always_inline int cr_sock_rule(struct bpf_sock_ops *skops, __u32 *flags)
{
    struct cr_pkt_key k = {};
    /* every context field read at once through a compiler barrier: otherwise clang selects between two
     * context pointers and loads once, which the verifier refuses ("dereference of modified ctx ptr") */
#define CR_CTX(expr) ({ __u32 __v = (expr); asm volatile("" : "+r"(__v)); __v; })
    __u32 family = CR_CTX(skops->family);
    __u32 local[4] = {CR_CTX(skops->local_ip6[0]), CR_CTX(skops->local_ip6[1]), CR_CTX(skops->local_ip6[2]),
                      CR_CTX(skops->local_ip6[3])};
    __u32 remote[4] = {CR_CTX(skops->remote_ip6[0]), CR_CTX(skops->remote_ip6[1]), CR_CTX(skops->remote_ip6[2]),
                       CR_CTX(skops->remote_ip6[3])};
    __u32 local4 = CR_CTX(skops->local_ip4), remote4 = CR_CTX(skops->remote_ip4);
    __u32 local_port = CR_CTX(skops->local_port), remote_port = CR_CTX(skops->remote_port);
    if (family == 2 /* AF_INET */) {
        k.family = 4;
        local[0] = local4; local[1] = 0; local[2] = 0; local[3] = 0;
        remote[0] = remote4; remote[1] = 0; remote[2] = 0; remote[3] = 0;
    } else if (family == 10 /* AF_INET6 */) {
        k.family = 6;
    } else {
        return -1;
    }
    __u16 lport = bpf_htons((__u16)local_port);            /* host order in the context */
    __u16 rport = bpf_htons((__u16)bpf_ntohl(remote_port));  /* network order in the high half */
    k.proto = IPPROTO_TCP;
    __builtin_memcpy(k.saddr, local, 16);
    __builtin_memcpy(k.daddr, remote, 16);
    k.sport = lport;
    k.dport = rport;
    int rule = cr_find(&k, flags);
    if (rule >= 0)
        return rule;
    __builtin_memcpy(k.saddr, remote, 16);
    __builtin_memcpy(k.daddr, local, 16);
    k.sport = rport;
    k.dport = lport;
    return cr_find(&k, flags);
}

int cr_sockops(struct bpf_sock_ops *skops)
{
    __u32 flags = 0;
    int rule;
    switch (skops->op) {
    case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
    case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
        if (cr_sock_rule(skops, &flags) >= 0)
            bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_RTT_CB_FLAG);
        break;
    case BPF_SOCK_OPS_RTT_CB:
        rule = cr_sock_rule(skops, &flags);
        if (rule >= 0) {
            /* kernels >= 6.10 pass this sample (mrtt, us) and the srtt it updates to (us << 3); the
             * callback runs before tp->srtt_us is written, and at most once per RTT window */
            __u64 mrtt_us = skops->args[0];
            __u64 srtt_us = skops->args[1] ? skops->args[1] >> 3 : skops->srtt_us >> 3;
            __u64 us = mrtt_us ? mrtt_us : srtt_us;
            cr_sample(rule, flags, bpf_ktime_get_ns(), us * 1000, (__u32)srtt_us);
        }
        break;
    }
    skops->reply = 0;
    return 1;
}

/* Benchmarks (BPF_PROG_TEST_RUN): one raw event a run, one histogram sample a run, or only the clock read both
 * start with (what the test-run loop and the clock cost, to subtract). */
int cr_bench_clock(struct __sk_buff *skb)
{
    __u64 now = bpf_ktime_get_ns();
    return now == 0 ? TC_ACT_OK : TC_ACT_UNSPEC;
}

int cr_bench_event(struct __sk_buff *skb)
{
    __u64 now = bpf_ktime_get_ns();
    cr_sample(0, CR_F_EVENTS, now, now & 0xfffff, 0);
    return TC_ACT_UNSPEC;
}

/* CR_BENCH_BATCH raw events a run: the test-run loop and the clock read amortised, so the figure is the ring's
 * and the reader's, as when many packets (CPUs) produce at once. */
#define CR_BENCH_BATCH 8
int cr_bench_event_batch(struct __sk_buff *skb)
{
    __u64 now = bpf_ktime_get_ns();
#pragma unroll
    for (int i = 0; i < CR_BENCH_BATCH; i++)
        cr_sample(0, CR_F_EVENTS, now + i, (now + i) & 0xfffff, 0);
    return TC_ACT_UNSPEC;
}

int cr_bench_hist(struct __sk_buff *skb)
{
    __u64 now = bpf_ktime_get_ns();
    cr_sample(0, 0, now, now & 0xfffff, 0);
    return TC_ACT_UNSPEC;
}

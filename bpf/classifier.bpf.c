/* chaos-inject per-flow classifier: cls_bpf direct-action on clsact egress/ingress.
 *
 * Load-time configuration (bcc cflags, never text substitution):
 *   CI_MAX_RULES   capacity of the rules hash and of the per-rule arrays
 *   CI_MAX_SHAPES  bound of the shape loop
 *   CI_L2_LEN      bytes before the IP header (14 for Ethernet and loopback, 0 for L3 devices)
 *   CI_DUP_MARK    skb->mark bit that tags our own duplicates so they pass once, untouched
 *   CI_SEEDED      when defined, decisions use a counter-based PRNG seeded with seed[0] (reproducible); the
 *                  seed is a map value, so every seed shares one compiled program
 *   CI_FLOW_CACHE  an exact-match flow cache (LRU hash, CI_MAX_FLOWS flows) in front of the shape walk: the
 *                  first packet of a flow walks the shapes, the rest do one hash lookup, however many shapes
 *                  are in use. A verdict is tied to the rules' generation (bumped by user space whenever rules
 *                  or shapes are added or removed), and names its rule by id: the rule's expiry and fault are
 *                  read from rule_by_id per packet, so a cached flow sees renewals, expiry and removal at once.
 *   CI_HOLD        hold recording: a delayed packet's time at this classifier is kept under its skb's address,
 *                  and raw tracepoints close the sample when the device transmits it (net_dev_start_xmit:
 *                  the hold per packet, from the kernel's clock, into the hold_events ring buffer) or forget
 *                  it when the skb is freed untransmitted (kfree_skb, consume_skb: a netem drop, a GSO split).
 *                  CI_HOLD_RING_PAGES sizes the ring (needs BPF ring buffers: Linux 5.8).
 *   CI_STEER       netem engine: matched packets are steered to their rule's class (skb->tc_classid) of our
 *                  prio qdisc, whose netem leaf applies the fault; the classifier itself drops nothing.
 *                  On clsact ingress, ci_ingress runs as a plain (not direct-action) classifier: it answers
 *                  "match" (-1) or "no match" (0), and the filter's mirred action hands matches to our IFB
 *                  device, whose prio root runs ci_ifb to steer them in turn. (bpf_redirect to an IFB is
 *                  dropped by ifb_xmit, which accepts only packets that act_mirred redirected.)
 *
 * Packets that match no live rule leave with TC_ACT_UNSPEC, so filters after ours still run.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>

#include "chaos_abi.h"

#ifndef CI_MAX_RULES
#define CI_MAX_RULES 1024
#endif
#ifndef CI_MAX_SHAPES
#define CI_MAX_SHAPES 16  /* at most 16: find_rule is written out for 16 */
#endif
#ifndef CI_L2_LEN
#define CI_L2_LEN 14
#endif
#ifndef CI_MAX_FLOWS
#define CI_MAX_FLOWS 16384
#endif
#ifndef CI_DUP_MARK
#define CI_DUP_MARK 0x40000000u
#endif

BPF_HASH(rules, struct ci_rule_key, struct ci_rule, CI_MAX_RULES);
BPF_ARRAY(shapes, struct ci_shape, CI_MAX_SHAPES);
BPF_ARRAY(shape_count, __u32, 1);
BPF_PERCPU_ARRAY(counters, struct ci_counters, CI_MAX_RULES);
BPF_ARRAY(rule_state, struct ci_rule_state, CI_MAX_RULES);
BPF_ARRAY(jitter_table, __s16, CI_JITTER_TABLE_SIZE);  /* EDT jitter: netem-style distribution table */
BPF_ARRAY(rule_by_id, struct ci_rule, CI_MAX_RULES);  /* the rules again, by id (what cached flows read) */
BPF_ARRAY(generation, __u64, 1);                      /* bumped by user space on each change of the rule set */
#ifdef CI_SEEDED
BPF_ARRAY(seed, __u64, 1);
#endif
#ifdef CI_FLOW_CACHE
BPF_TABLE("lru_hash", struct ci_flow_key, struct ci_flow, flows, CI_MAX_FLOWS);
#endif

#ifdef CI_HOLD
#ifndef CI_HOLD_RING_PAGES
#define CI_HOLD_RING_PAGES 256
#endif
#ifndef CI_HOLD_ENTRIES
#define CI_HOLD_ENTRIES 65536
#endif
struct ci_hold_start {
    __u64 t_ns;                /* bpf_ktime_get_ns() when the packet met this classifier */
    __u32 rule;
    __u32 pad;
};
/* One sample, laid out as the recorder's struct cr_event (t_ns, latency_ns, rule, aux): one reader for both. */
struct ci_hold_event {
    __u64 t_ns;                /* when the device took the packet */
    __u64 hold_ns;
    __u32 rule;
    __u32 aux;
};
/* keyed by the skb's address: the tc program's context is the skb itself, the tracepoints' first argument too */
BPF_TABLE("lru_hash", __u64, struct ci_hold_start, hold_start, CI_HOLD_ENTRIES);
BPF_RINGBUF_OUTPUT(hold_events, CI_HOLD_RING_PAGES);
BPF_PERCPU_ARRAY(hold_lost, __u64, 1);

static __always_inline void hold_begin(struct __sk_buff *skb, __u32 rule)
{
    __u64 key = (__u64)(long)skb;
    struct ci_hold_start start = {.t_ns = bpf_ktime_get_ns(), .rule = rule};
    hold_start.update(&key, &start);
}

/* raw tracepoint net_dev_start_xmit(skb, dev): the device takes the packet, the hold is over */
int ci_hold_xmit(struct bpf_raw_tracepoint_args *ctx)
{
    __u64 key = ctx->args[0];
    struct ci_hold_start *start = hold_start.lookup(&key);
    if (!start)
        return 0;
    __u64 now = bpf_ktime_get_ns();
    struct ci_hold_event *ev = hold_events.ringbuf_reserve(sizeof(struct ci_hold_event));
    if (ev) {
        ev->t_ns = now;
        ev->hold_ns = now - start->t_ns;
        ev->rule = start->rule;
        ev->aux = 0;
        hold_events.ringbuf_submit(ev, 0);
    } else {
        __u32 zero = 0;
        __u64 *lost = hold_lost.lookup(&zero);
        if (lost)
            (*lost)++;
    }
    hold_start.delete(&key);
    return 0;
}

/* raw tracepoints kfree_skb / consume_skb: an skb freed before it was sent (a netem or fq drop, a GSO split)
 * takes its start with it, so a later skb at the same address is never paired with it */
int ci_hold_free(struct bpf_raw_tracepoint_args *ctx)
{
    __u64 key = ctx->args[0];
    hold_start.delete(&key);
    return 0;
}
#define CI_HOLD_BEGIN(skb, rule) hold_begin((skb), (rule))
#else
#define CI_HOLD_BEGIN(skb, rule) do { } while (0)
#endif

#define CI_MODE_ACT 0       /* the classifier applies the fault itself (eBPF engine) */
#define CI_MODE_STEER 1     /* netem engine: pick the class of the rule's netem leaf */
#define CI_MODE_MATCH 2     /* netem engine, ingress: say "match" so the filter's mirred action runs */
#define CI_MODE_IFB 3       /* netem engine, on the IFB: steer again, already counted at ingress */
#define CI_MODE_MATCH_QUIET 4  /* EDT engine, ingress: "match" for the mirred action; counted on the IFB */

struct packet {
    __u32 saddr[4];
    __u32 daddr[4];
    __u16 sport;
    __u16 dport;
    __u8 family;
    __u8 proto;
    __u16 l4_off;
};

/* Headers are read in place when they sit in the linear part of the skb (the common case, and ~20 ns cheaper
 * per packet than bpf_skb_load_bytes), else copied out with bpf_skb_load_bytes. */
static __always_inline int load(struct __sk_buff *skb, __u32 offset, void *to, __u32 len, void **direct)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    if (offset <= 128 && data + offset + len <= data_end) {
        *direct = data + offset;
        return 0;
    }
    *direct = to;
    return bpf_skb_load_bytes(skb, offset, to, len);
}

static __always_inline int parse(struct __sk_buff *skb, struct packet *pkt)
{
    void *at;
    if (skb->protocol == htons(ETH_P_IP)) {
        struct iphdr copy;
        void *data = (void *)(long)skb->data;
        void *data_end = (void *)(long)skb->data_end;
        struct iphdr *ip = data + CI_L2_LEN;
        if ((void *)(ip + 1) > data_end) {
            if (bpf_skb_load_bytes(skb, CI_L2_LEN, &copy, sizeof(copy)) < 0)
                return -1;
            ip = &copy;
        }
        pkt->family = 4;
        pkt->proto = ip->protocol;
        pkt->saddr[0] = ip->saddr;
        pkt->daddr[0] = ip->daddr;
        pkt->l4_off = CI_L2_LEN + ip->ihl * 4;
        if (ip->frag_off & htons(0x1fff))  /* later fragments carry no ports */
            return 0;
    } else if (skb->protocol == htons(ETH_P_IPV6)) {
        struct ipv6hdr copy;
        void *data = (void *)(long)skb->data;
        void *data_end = (void *)(long)skb->data_end;
        struct ipv6hdr *ip6 = data + CI_L2_LEN;
        if ((void *)(ip6 + 1) > data_end) {
            if (bpf_skb_load_bytes(skb, CI_L2_LEN, &copy, sizeof(copy)) < 0)
                return -1;
            ip6 = &copy;
        }
        pkt->family = 6;
        pkt->proto = ip6->nexthdr;  /* extension headers are not walked: such packets match without ports */
        __builtin_memcpy(pkt->saddr, &ip6->saddr, 16);
        __builtin_memcpy(pkt->daddr, &ip6->daddr, 16);
        pkt->l4_off = CI_L2_LEN + sizeof(*ip6);
    } else {
        return -1;
    }
    if (pkt->proto == IPPROTO_TCP || pkt->proto == IPPROTO_UDP) {
        __u16 copy[2];
        if (load(skb, pkt->l4_off, copy, sizeof(copy), &at) == 0) {
            __u16 *ports = at;
            pkt->sport = ports[0];
            pkt->dport = ports[1];
        }
    }
    return 0;
}

static __always_inline struct ci_rule *try_shape(struct packet *pkt, __u8 hook, __u32 index, __u32 count)
{
    if (index >= count)
        return 0;
    __u32 key_index = index;
    struct ci_shape *shape = shapes.lookup(&key_index);
    if (!shape || shape->family != pkt->family || shape->hook != hook)
        return 0;
    struct ci_rule_key key = {};
    key.family = pkt->family;
    key.hook = hook;
    key.shape = index;
    key.proto = shape->match_proto ? pkt->proto : 0;
    key.sport = shape->match_sport ? pkt->sport : 0;
    key.dport = shape->match_dport ? pkt->dport : 0;
#pragma unroll
    for (int w = 0; w < 4; w++) {
        key.saddr[w] = pkt->saddr[w] & shape->smask[w];
        key.daddr[w] = pkt->daddr[w] & shape->dmask[w];
    }
    return rules.lookup(&key);
}

/* One hash probe per shape in use, most specific first; written out rather than looped because older
 * verifiers (6.1) reject the loop's back-edge as an "infinite loop" and clang will not unroll it. */
#define CI_TRY_SHAPE(i)                                      \
    if ((i) < CI_MAX_SHAPES) {                               \
        struct ci_rule *rule = try_shape(pkt, hook, (i), n); \
        if (rule)                                            \
            return rule;                                     \
    }

static __always_inline struct ci_rule *find_rule(struct packet *pkt, __u8 hook)
{
    __u32 zero = 0;
    __u32 *count = shape_count.lookup(&zero);
    if (!count)
        return 0;
    __u32 n = *count;
    CI_TRY_SHAPE(0) CI_TRY_SHAPE(1) CI_TRY_SHAPE(2) CI_TRY_SHAPE(3)
    CI_TRY_SHAPE(4) CI_TRY_SHAPE(5) CI_TRY_SHAPE(6) CI_TRY_SHAPE(7)
    CI_TRY_SHAPE(8) CI_TRY_SHAPE(9) CI_TRY_SHAPE(10) CI_TRY_SHAPE(11)
    CI_TRY_SHAPE(12) CI_TRY_SHAPE(13) CI_TRY_SHAPE(14) CI_TRY_SHAPE(15)
    return 0;
}

/* The rule for this packet: from the flow cache when it holds a verdict of the current generation, else by
 * the shape walk (whose verdict, match or none, is then cached). The generation is read before the walk, so a
 * rule change racing with the walk leaves a verdict that is already stale, never a wrong one marked fresh. */
static __always_inline struct ci_rule *lookup_rule(struct packet *pkt, __u8 hook)
{
#ifdef CI_FLOW_CACHE
    __u32 zero = 0;
    __u64 *gen = generation.lookup(&zero);
    if (!gen)
        return 0;
    __u64 gen_now = *gen;
    struct ci_flow_key fk = {};
    fk.family = pkt->family;
    fk.proto = pkt->proto;
    fk.hook = hook;
    fk.sport = pkt->sport;
    fk.dport = pkt->dport;
    __builtin_memcpy(fk.saddr, pkt->saddr, 16);
    __builtin_memcpy(fk.daddr, pkt->daddr, 16);
    struct ci_flow *cached = flows.lookup(&fk);
    if (cached && cached->generation == gen_now) {
        if (!cached->found)
            return 0;
        __u32 id = cached->rule_id;
        return rule_by_id.lookup(&id);
    }
    struct ci_rule *rule = find_rule(pkt, hook);
    struct ci_flow verdict = {};
    verdict.generation = gen_now;
    if (rule) {
        verdict.rule_id = rule->id;
        verdict.found = 1;
    }
    flows.update(&fk, &verdict);
    return rule;
#else
    return find_rule(pkt, hook);
#endif
}

static __always_inline __u64 splitmix64(__u64 x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Random 32-bit draw number `which` for the current packet. Seeded: a pure function of
 * (seed, rule, packet index, which), so a run replays exactly; else the kernel's PRNG. */
static __always_inline __u32 draw(__u64 base, __u32 which)
{
#ifdef CI_SEEDED
    return (__u32)splitmix64(base + which * 0xd1b54a32d192ed03ull);
#else
    return bpf_get_prandom_u32();
#endif
}

static __always_inline int chance(__u64 threshold, __u64 base, __u32 which)
{
    return (__u64)draw(base, which) < threshold;
}

static __always_inline void corrupt_payload(struct __sk_buff *skb, struct packet *pkt, struct ci_counters *ctr,
                                            __u64 base)
{
    __u32 start = pkt->l4_off;
    if (pkt->proto == IPPROTO_UDP) {
        start += 8;
    } else if (pkt->proto == IPPROTO_TCP) {
        __u8 doff_byte;
        if (bpf_skb_load_bytes(skb, pkt->l4_off + 12, &doff_byte, 1) < 0)
            return;
        start += (doff_byte >> 4) * 4;
    }
    if (start >= skb->len)
        return;  /* no payload (pure ACK): nothing to corrupt */
    __u32 span = skb->len - start;
    __u32 r = draw(base, 4);
    __u32 offset = start + (r % span);
    __u8 byte;
    if (bpf_skb_load_bytes(skb, offset, &byte, 1) < 0)
        return;
    byte ^= (__u8)(1u << ((r >> 24) & 7));
    if (bpf_skb_store_bytes(skb, offset, &byte, 1, 0) == 0)
        ctr->corrupted_packets++;
}

/* EDT delay: the packet's departure time, read by the sch_fq root that holds it until then. Departures never
 * go backwards within a rule, so jitter does not reorder the flow. */
static __always_inline void set_departure(struct __sk_buff *skb, struct ci_rule *rule, struct ci_rule_state *state,
                                          struct ci_counters *ctr, __u64 base)
{
    __u64 now = bpf_ktime_get_ns();
    __s64 jitter = 0;
    if (rule->jitter_ns) {
        __u32 r = draw(base, 5);
        if (rule->jitter_dist == CI_DIST_TABLE) {
            __u32 index = r % CI_JITTER_TABLE_SIZE;
            __s16 *sigmas = jitter_table.lookup(&index);
            if (sigmas) {  /* BPF has no signed division: divide the magnitude */
                __u64 magnitude = rule->jitter_ns * (__u64)(*sigmas < 0 ? -*sigmas : *sigmas);
                jitter = *sigmas < 0 ? -(__s64)(magnitude / CI_JITTER_TABLE_SCALE)
                                     : (__s64)(magnitude / CI_JITTER_TABLE_SCALE);
            }
        } else {
            __u64 wide = ((__u64)r << 32) | draw(base, 6);
            jitter = (__s64)(wide % (2 * rule->jitter_ns + 1)) - (__s64)rule->jitter_ns;
        }
    }
    __s64 delay = (__s64)rule->delay_ns + jitter;
    __u64 departure = now + (delay > 0 ? (__u64)delay : 0);
    __u64 earliest = skb->tstamp > now ? skb->tstamp : now;  /* keep TCP's own pacing, add to it */
    if (departure < earliest)
        departure = earliest;
    if (departure < state->last_departure_ns)
        departure = state->last_departure_ns;
    state->last_departure_ns = departure;
    skb->tstamp = departure;
    ctr->delayed_packets++;
}

static __always_inline int classify(struct __sk_buff *skb, __u8 hook, int mode)
{
    /* "let it pass untouched": continue with the next filter (direct action), or "no match" (plain) */
    int pass = (mode == CI_MODE_MATCH || mode == CI_MODE_MATCH_QUIET) ? 0 : TC_ACT_UNSPEC;
    if (skb->mark & CI_DUP_MARK) {  /* our own duplicate coming round again: release it once */
        skb->mark &= ~CI_DUP_MARK;
        return pass;
    }
    struct packet pkt = {};
    if (parse(skb, &pkt) < 0)
        return pass;
    struct ci_rule *rule = lookup_rule(&pkt, hook);
    if (!rule)
        return pass;

    __u32 id = rule->id;
    struct ci_counters *ctr = counters.lookup(&id);
    struct ci_rule_state *state = rule_state.lookup(&id);
    if (!ctr || !state)
        return pass;
    if (bpf_ktime_get_ns() > rule->expires_ns) {
        if (mode != CI_MODE_IFB)
            ctr->expired_packets++;
        return pass;
    }
    if (mode == CI_MODE_IFB) {
        if (rule->flags & CI_F_DELAY)
            CI_HOLD_BEGIN(skb, id);
        skb->tc_classid = rule->classid;
        return TC_ACT_OK;
    }
    if (mode == CI_MODE_MATCH_QUIET)
        return -1;
    ctr->matched_packets++;
    ctr->matched_bytes += skb->len;
    if (mode == CI_MODE_STEER) {
        if (rule->flags & CI_F_DELAY)
            CI_HOLD_BEGIN(skb, id);
        skb->tc_classid = rule->classid;
        return TC_ACT_OK;
    }
    if (mode == CI_MODE_MATCH)
        return -1;  /* match, with the filter's own classid: its mirred action runs */

    __u64 base = 0;
#ifdef CI_SEEDED
    __u32 zero = 0;
    __u64 *seed_value = seed.lookup(&zero);
    if (!seed_value)
        return pass;
    __u64 index = __sync_fetch_and_add(&state->draws, 1);
    base = splitmix64(*seed_value ^ ((__u64)id << 40)) + index * 0x9e3779b97f4a7c15ull;
#endif
    __u32 flags = rule->flags;
    int drop = 0;
    if (flags & CI_F_PARTITION) {
        drop = 1;
    } else if (flags & CI_F_LOSS) {
        drop = chance(rule->loss_threshold, base, 0);
    } else if (flags & CI_F_GEMODEL) {
        /* netem's order: the packet's fate follows the current state, then the state moves on */
        if (state->ge_bad) {
            drop = chance(rule->ge_bad_loss_threshold, base, 0);
            if (chance(rule->ge_r_threshold, base, 1))
                state->ge_bad = 0;
        } else {
            drop = chance(rule->ge_good_loss_threshold, base, 0);
            if (chance(rule->ge_p_threshold, base, 1))
                state->ge_bad = 1;
        }
    }
    if (drop) {
        ctr->dropped_packets++;
        ctr->dropped_bytes += skb->len;
        return TC_ACT_STOLEN;  /* consumed without a drop report: TCP sees loss on the wire */
    }
    if ((flags & CI_F_DUPLICATE) && chance(rule->duplicate_threshold, base, 2)) {
        __u32 mark = skb->mark;
        skb->mark = mark | CI_DUP_MARK;
        if (bpf_clone_redirect(skb, skb->ifindex, hook == CI_HOOK_INGRESS ? BPF_F_INGRESS : 0) == 0)
            ctr->duplicated_packets++;
        skb->mark = mark;
    }
    if ((flags & CI_F_CORRUPT) && chance(rule->corrupt_threshold, base, 3))
        corrupt_payload(skb, &pkt, ctr, base);
    if (flags & CI_F_DELAY) {
        set_departure(skb, rule, state, ctr, base);
        CI_HOLD_BEGIN(skb, id);
    }
    return TC_ACT_UNSPEC;
}

#ifdef CI_STEER
int ci_egress(struct __sk_buff *skb)
{
    return classify(skb, CI_HOOK_EGRESS, CI_MODE_STEER);
}

int ci_ingress(struct __sk_buff *skb)
{
    return classify(skb, CI_HOOK_INGRESS, CI_MODE_MATCH);
}

int ci_ifb(struct __sk_buff *skb)
{
    return classify(skb, CI_HOOK_INGRESS, CI_MODE_IFB);
}
#else
int ci_egress(struct __sk_buff *skb)
{
    return classify(skb, CI_HOOK_EGRESS, CI_MODE_ACT);
}

int ci_ingress(struct __sk_buff *skb)
{
    return classify(skb, CI_HOOK_INGRESS, CI_MODE_ACT);
}

/* EDT engine, ingress: the interface's plain filter says "match" (its mirred action hands the packet to our
 * IFB), and on the IFB's egress the ingress rules act and set departure times for its fq root. */
int ci_ingress_match(struct __sk_buff *skb)
{
    return classify(skb, CI_HOOK_INGRESS, CI_MODE_MATCH_QUIET);
}

int ci_ifb(struct __sk_buff *skb)
{
    return classify(skb, CI_HOOK_INGRESS, CI_MODE_ACT);
}
#endif

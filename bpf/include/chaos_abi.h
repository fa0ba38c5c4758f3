/* chaos-inject kernel/user ABI: the only definition of the structs shared by bpf/ programs and Python
 * (injector/kernel/abi.py mirrors them with ctypes and checks sizes at load time). */
#ifndef CHAOS_ABI_H
#define CHAOS_ABI_H

#define CI_HOOK_EGRESS 0
#define CI_HOOK_INGRESS 1

/* ci_rule.flags */
#define CI_F_PARTITION (1u << 0)
#define CI_F_LOSS (1u << 1)
#define CI_F_GEMODEL (1u << 2)
#define CI_F_CORRUPT (1u << 3)
#define CI_F_DUPLICATE (1u << 4)
#define CI_F_DELAY (1u << 5)     /* EDT: hold the packet with skb->tstamp (needs an sch_fq root) */

/* Jitter distribution of an EDT delay rule (the table lives in the jitter_table map). */
#define CI_DIST_UNIFORM 0
#define CI_DIST_TABLE 1
#define CI_JITTER_TABLE_SIZE 4096
#define CI_JITTER_TABLE_SCALE 8192  /* table value / scale = standard deviations, as netem's tables */

/* Probabilities are thresholds over a 32-bit random draw: P = threshold / 2^32, threshold in [0, 2^32]. */
#define CI_PROB_ONE (1ull << 32)

/* Exact-match key of a rule; addresses and ports are masked by the rule's shape (network byte order). */
struct ci_rule_key {
    __u8 family;  /* 4 or 6 */
    __u8 proto;   /* IPPROTO_TCP / IPPROTO_UDP, 0 = any */
    __u8 hook;    /* CI_HOOK_* */
    __u8 shape;   /* index in the shapes array: keys of different shapes never collide */
    __u16 sport;  /* 0 = any */
    __u16 dport;
    __u32 saddr[4];
    __u32 daddr[4];
};

/* A match shape: which fields a group of rules compares. Lookups cost one hash probe per shape in use,
 * whatever the number of rules (tuple space search). */
struct ci_shape {
    __u8 family;
    __u8 hook;
    __u8 match_proto;
    __u8 match_sport;
    __u8 match_dport;
    __u8 _pad[3];
    __u32 smask[4];
    __u32 dmask[4];
};

struct ci_rule {
    __u64 expires_ns;          /* CLOCK_MONOTONIC; after it the rule matches nothing (lease) */
    __u32 id;                  /* index into counters and state arrays */
    __u32 flags;               /* CI_F_* */
    __u64 loss_threshold;
    __u64 corrupt_threshold;
    __u64 duplicate_threshold;
    __u64 ge_p_threshold;         /* good -> bad */
    __u64 ge_r_threshold;         /* bad -> good */
    __u64 ge_bad_loss_threshold;  /* netem 1-h */
    __u64 ge_good_loss_threshold; /* netem 1-k */
    __u32 classid;             /* netem engine: minor of the class whose netem leaf serves this rule
                                * (skb->tc_classid is 16 bits; the filter's classid gives the major) */
    __u32 jitter_dist;         /* CI_DIST_* */
    __u64 delay_ns;            /* EDT engine: added delay ... */
    __u64 jitter_ns;           /* ... and its spread (uniform: +-jitter; table: jitter = one sigma) */
};

/* Flow cache (CI_FLOW_CACHE): a packet's full match input -> the rule it resolved to, valid while the rules'
 * generation is unchanged. Only which rule matched is cached; the rule's values (expiry, fault) are read from
 * rule_by_id on every packet, and every random decision is still drawn per packet. */
struct ci_flow_key {
    __u8 family;
    __u8 proto;
    __u8 hook;
    __u8 _pad;
    __u16 sport;
    __u16 dport;
    __u32 saddr[4];
    __u32 daddr[4];
};

struct ci_flow {
    __u64 generation;  /* the rules' generation when this verdict was made */
    __u32 rule_id;
    __u32 found;       /* 0: no rule matches this flow (a cached "pass") */
};

/* Per rule, per CPU. */
struct ci_counters {
    __u64 matched_packets;
    __u64 matched_bytes;
    __u64 dropped_packets;
    __u64 dropped_bytes;
    __u64 corrupted_packets;
    __u64 duplicated_packets;
    __u64 expired_packets;     /* matched after the lease ran out: passed untouched */
    __u64 delayed_packets;     /* EDT: given a departure time */
};

/* Per rule, shared across CPUs. */
struct ci_rule_state {
    __u64 draws;     /* packet index for the seeded counter-based PRNG */
    __u32 ge_bad;    /* Gilbert-Elliott: 1 while in the bad state */
    __u32 _pad;
    __u64 last_departure_ns;  /* EDT: latest departure time given, so jitter never reorders a flow */
};

#endif

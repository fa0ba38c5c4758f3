/* chaos-inject recording ABI: structs shared by bpf/record.bpf.c and injector/kernel/record_program.py
 * (ctypes/numpy mirrors there, sizes checked at load time). */
#ifndef CHAOS_RECORD_ABI_H
#define CHAOS_RECORD_ABI_H

#define CR_MAX_FILTERS 16           /* flow filters per loaded recorder (rule ids 0..15) */
#define CR_PHASES 3                 /* 0 baseline, 1 fault, 2 recovery (store.PHASES order) */

/* Log-linear histogram: values < 256 ns have their own bucket; above, 2^e-wide buckets with 128 per octave,
 * so a bucket is at most 1/128 of its lower bound wide (relative error <= 0.78 %, <= 0.39 % at the
 * midpoint). Values >= 2^40 ns (~18 min) land in the last bucket. */
#define CR_HIST_SUB_BITS 7
#define CR_HIST_SUB 128
#define CR_HIST_MAX_MSB 39
#define CR_HIST_BUCKETS ((CR_HIST_MAX_MSB - CR_HIST_SUB_BITS + 2) * CR_HIST_SUB)

/* cr_filter.flags */
#define CR_F_EVENTS (1u << 0)       /* emit a raw ring-buffer event per sample (else histogram only) */

/* A flow to record: zero address/port/proto = any. Ports in network byte order. */
struct cr_filter {
    __u8 family;     /* 4 or 6; 0 = slot unused */
    __u8 proto;      /* IPPROTO_TCP / IPPROTO_UDP, 0 = any */
    __u16 sport;
    __u16 dport;
    __u16 flags;     /* CR_F_* */
    __u32 saddr[4];
    __u32 daddr[4];
};

/* One raw sample in the ring buffer (8-byte header + these 24 bytes = 32 bytes a record). */
struct cr_event {
    __u64 t_ns;        /* bpf_ktime_get_ns() when the sample completed (CLOCK_MONOTONIC) */
    __u64 latency_ns;
    __u32 rule;        /* filter index */
    __u32 aux;         /* oneway: IP length; rtt: smoothed RTT (us) */
};

/* Identity of one packet, built the same way at the stamp and at the match. */
struct cr_pkt_key {
    __u8 family;
    __u8 proto;
    __u16 sport;
    __u16 dport;
    __u16 ip_len;      /* IP payload + header length as sent */
    __u32 saddr[4];
    __u32 daddr[4];
    __u32 ident;       /* IPv4 id (UDP) or TCP sequence */
    __u32 _pad;
    __u64 payload;     /* first 8 payload bytes (TCP without 8 bytes of payload: ack sequence) */
};

struct cr_stamp {
    __u64 t_ns;
    __u32 rule;
    __u32 flags;
};

/* Per filter, per CPU. */
struct cr_counters {
    __u64 stamped;      /* packets stamped at the sender */
    __u64 stamp_full;   /* stamp table update failed (not recorded) */
    __u64 matched;      /* stamps matched at the receiver: samples */
    __u64 events;       /* raw events delivered into the ring */
    __u64 lost;         /* ring buffer full: raw event lost (histogram still counted) */
};

#endif

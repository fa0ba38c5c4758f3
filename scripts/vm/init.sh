#!/bin/busybox sh
# PID 1 of the test VM (packed into the hand-made initramfs by scripts/vm/run.sh).
# Host root: 9p "hostroot", read-only, under a tmpfs overlay. Checkout: 9p "checkout", read-write, same path.
# Runs <run dir>/cmd.sh in the new root, writes its exit code to <run dir>/rc, powers off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec </dev/null >/dev/console 2>&1

say() { echo "[vm-init] $*"; }
die() { say "FATAL: $*"; echo 1 > /proc/sys/kernel/sysrq; echo o > /proc/sysrq-trigger; sleep 5; }

for arg in $(cat /proc/cmdline); do
  case "$arg" in
    ci.run=*) run=${arg#ci.run=} ;;
    ci.checkout=*) checkout=${arg#ci.checkout=} ;;
  esac
done
ver=$(uname -r)

# virtio + 9p + overlay modules, in dependency order (listed by the host at pack time)
while read -r ko; do insmod "/modules/$ko" || die "insmod $ko"; done < /modules/order

p9="trans=virtio,version=9p2000.L,msize=512000"
mkdir -p /lower /rw /newroot
mount -t 9p -o "$p9,ro,cache=loose" hostroot /lower || die "mount hostroot"
mount -t tmpfs -o mode=0755 rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || die "mount overlay"
n=/newroot
mount -t proc proc $n/proc
mount -t sysfs sys $n/sys
mount -t devtmpfs dev $n/dev
mkdir -p $n/dev/pts $n/dev/shm
mount -t devpts devpts $n/dev/pts
mount -t tmpfs shm $n/dev/shm
mount -t tmpfs -o mode=0755 run $n/run
mount -t tmpfs -o mode=1777 tmp $n/tmp
mount -t bpf bpf $n/sys/fs/bpf
mount -t tracefs tracefs $n/sys/kernel/tracing
mount -t debugfs debugfs $n/sys/kernel/debug
# the checkout last, so that a checkout under /tmp or /run is not hidden by the tmpfs mounted there
mkdir -p "$n$checkout"
mount -t 9p -o "$p9,cache=loose" checkout "$n$checkout" || die "mount checkout $checkout"
# the guest kernel's modules (unpacked on the host under .cache/vm/<ver>/root) where modprobe looks
mkdir -p $n/lib/modules/$ver
mount --bind "$n$checkout/.cache/vm/$ver/root/lib/modules/$ver" $n/lib/modules/$ver || die "bind modules"

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
up() { cut -d' ' -f1 /proc/uptime; }
t_mods=$(up)
# the qdiscs, classifiers and actions the tests and the injector use (one modprobe: each run costs ~0.2 s in TCG)
chroot $n modprobe -a sch_netem sch_fq sch_htb sch_tbf sch_prio sch_ingress cls_bpf cls_u32 cls_matchall \
  cls_flower act_bpf act_mirred act_gact veth || say "some modules failed to load"
chroot $n modprobe ifb numifbs=0 || say "modprobe ifb failed"
chroot $n ip link set lo up
hostname ci-vm
say "ready: kernel $ver, uptime $(up)s (root mounted at ${t_mods}s)"

chroot $n /bin/sh "$run/cmd.sh"
rc=$?
echo "$rc" > "$n$run/rc"
sync
umount "$n$checkout" 2>/dev/null
poweroff -f

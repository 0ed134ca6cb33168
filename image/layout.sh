# The appliance's disk layout and package set, shared by image/build and
# the tests. Sourced, not run.

# Partition sizes, MiB. A root slot holds the whole compressed system; the
# data partition is grown to the rest of the disk on first boot.
bios_mib=1
esp_mib=48
slot_mib=150
data_mib=32

# Fixed identifiers, so that the same inputs give the same disk.
disk_guid=5249474E-5741-5900-0000-000000000000
bios_guid=5249474E-5741-5900-0000-000000000001
esp_guid=5249474E-5741-5900-0000-000000000002
root_a_guid=5249474E-5741-5900-0000-000000000003
root_b_guid=5249474E-5741-5900-0000-000000000004
data_guid=5249474E-5741-5900-0000-000000000005
esp_serial=52574159
data_fs_uuid=52494e47-5741-5900-0000-0000000000da

# What runs on the appliance: the kernel, systemd, networking and time,
# OpenSSH, and the libraries ringway links with. Nothing else a gateway
# does not need (no compilers, no package manager use at run time, no pager).
image_packages=(
    linux-image-amd64 initramfs-tools zstd
    systemd systemd-sysv udev dbus systemd-timesyncd systemd-resolved libnss-resolve
    openssh-server iproute2 kmod e2fsprogs fdisk openssl ca-certificates
    liburing2 libssl3 libc-ares2 libfmt9 libtomlplusplus3 libjemalloc2 libedit2 libcrypt1 libbsd0 libtinfo6
    libpsl5 publicsuffix libarchive13 libmagic1 libmagic-mgc libhyperscan5
)

# Never unpacked (dpkg path-exclude): documentation, manuals, translations,
# and kernel drivers for hardware a gateway server does not have.
image_path_excludes=(
    '/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' '/usr/share/locale/*' '/usr/share/lintian/*'
    '/usr/share/zsh/*' '/usr/share/bash-completion/*'
    '/lib/modules/*/kernel/drivers/gpu/*' '/lib/modules/*/kernel/drivers/media/*'
    '/lib/modules/*/kernel/sound/*' '/lib/modules/*/kernel/drivers/net/wireless/*'
    '/lib/modules/*/kernel/net/wireless/*' '/lib/modules/*/kernel/net/mac80211/*'
    '/lib/modules/*/kernel/drivers/bluetooth/*' '/lib/modules/*/kernel/net/bluetooth/*'
    '/lib/modules/*/kernel/drivers/staging/*' '/lib/modules/*/kernel/drivers/infiniband/*'
    '/lib/modules/*/kernel/drivers/iio/*' '/lib/modules/*/kernel/drivers/input/joystick/*'
    '/lib/modules/*/kernel/drivers/input/touchscreen/*' '/lib/modules/*/kernel/drivers/input/misc/*'
    '/lib/modules/*/kernel/drivers/isdn/*' '/lib/modules/*/kernel/drivers/mmc/*'
    '/lib/modules/*/kernel/drivers/usb/serial/*' '/lib/modules/*/kernel/drivers/usb/gadget/*'
    '/lib/modules/*/kernel/drivers/net/can/*' '/lib/modules/*/kernel/drivers/net/usb/*'
    '/lib/modules/*/kernel/drivers/hwmon/*' '/lib/modules/*/kernel/drivers/leds/*'
    '/lib/modules/*/kernel/drivers/mtd/*' '/lib/modules/*/kernel/drivers/nfc/*' '/lib/modules/*/kernel/net/nfc/*'
    '/lib/modules/*/kernel/drivers/platform/chrome/*' '/lib/modules/*/kernel/drivers/thunderbolt/*'
    '/lib/modules/*/kernel/drivers/atm/*' '/lib/modules/*/kernel/net/atm/*'
    '/lib/modules/*/kernel/drivers/firewire/*' '/lib/modules/*/kernel/drivers/parport/*'
    '/lib/modules/*/kernel/drivers/pcmcia/*' '/lib/modules/*/kernel/drivers/w1/*'
    '/lib/modules/*/kernel/drivers/hid/*' '/lib/modules/*/kernel/fs/ocfs2/*' '/lib/modules/*/kernel/fs/gfs2/*'
    '/lib/modules/*/kernel/fs/btrfs/*' '/lib/modules/*/kernel/fs/xfs/*' '/lib/modules/*/kernel/fs/nfs*'
    '/lib/modules/*/kernel/fs/ceph/*' '/lib/modules/*/kernel/fs/smb/*' '/lib/modules/*/kernel/fs/ntfs3/*'
    '/lib/modules/*/kernel/drivers/scsi/lpfc/*' '/lib/modules/*/kernel/drivers/scsi/qla2xxx/*'
    '/lib/modules/*/kernel/drivers/scsi/bfa/*' '/lib/modules/*/kernel/drivers/scsi/be2iscsi/*'
    '/lib/modules/*/kernel/drivers/scsi/qedf/*' '/lib/modules/*/kernel/drivers/scsi/qedi/*'
    '/lib/modules/*/kernel/drivers/scsi/fnic/*' '/lib/modules/*/kernel/drivers/scsi/csiostor/*'
)
# Kept although under an excluded path: the packages' licences, and the USB
# keyboard of a VGA console.
image_path_includes=(
    '/usr/share/doc/*/copyright'
    '/lib/modules/*/kernel/drivers/hid/hid.ko' '/lib/modules/*/kernel/drivers/hid/hid-generic.ko'
    '/lib/modules/*/kernel/drivers/hid/usbhid/*'
)

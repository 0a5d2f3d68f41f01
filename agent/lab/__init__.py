"""The local Asterisk lab (Debian sid root under chroot)."""

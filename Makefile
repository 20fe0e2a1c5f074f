# hostfwd: build, install and package.
#
#   make                  release build of hostfwd and hostfwdctl, plus the
#                         hostfwdctl man pages and shell completions
#   sudo make install     install (DESTDIR and PREFIX aware; runs no cargo
#                         when `make` was run before)
#   sudo make uninstall   remove what install installed (not /etc/hostfwd)
#   make deb              target/debian/hostfwd_<version>_<arch>.deb and
#                         target/debian/hostfwd.deb (a copy), built with
#                         dpkg-deb from a `make install DESTDIR=...` tree
#
# Paths that the system's services read (D-Bus, polkit, systemd units,
# /etc) do not follow PREFIX: dbus-daemon and polkitd look only there.
# (A SYSCONFDIR other than /etc also needs policy_dir set in hostfwd.toml;
# the unit's ConfigurationDirectory= is always below /etc.)

PREFIX         ?= /usr
BINDIR         ?= $(PREFIX)/bin
SBINDIR        ?= $(PREFIX)/sbin
DATADIR        ?= $(PREFIX)/share
MANDIR         ?= $(DATADIR)/man
DOCDIR         ?= $(DATADIR)/doc/hostfwd
BASHCOMPDIR    ?= $(DATADIR)/bash-completion/completions
ZSHCOMPDIR     ?= $(DATADIR)/zsh/site-functions
FISHCOMPDIR    ?= $(DATADIR)/fish/vendor_completions.d
SYSCONFDIR     ?= /etc
SYSTEMDUNITDIR ?= /usr/lib/systemd/system
SYSUSERSDIR    ?= /usr/lib/sysusers.d
DBUSDIR        ?= /usr/share/dbus-1
POLKITDIR      ?= /usr/share/polkit-1

CARGO   ?= cargo
INSTALL ?= install
# The workspace's target directory (cargo honours CARGO_TARGET_DIR too).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
REL        := $(TARGET_DIR)/release
GEN        := $(TARGET_DIR)/gen
BINS       := $(REL)/hostfwd $(REL)/hostfwdctl

VERSION := $(shell sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
DEB_ARCH ?= $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB_DIR  := $(TARGET_DIR)/debian
DEB      := $(DEB_DIR)/hostfwd_$(VERSION)_$(DEB_ARCH).deb

CONF := $(DESTDIR)$(SYSCONFDIR)/hostfwd/hostfwd.toml

.PHONY: all build gen install uninstall deb clean-deb

all: build
	@$(MAKE) --no-print-directory gen

build:
	$(CARGO) build --release --locked -p hostfwd -p hostfwdctl

# `make install` without a preceding `make` builds once; with one, it only
# copies (so that `sudo make install` needs no Rust toolchain for root).
$(BINS):
	$(CARGO) build --release --locked -p hostfwd -p hostfwdctl

# Man pages and completions come from hostfwdctl's own clap definition.
# Written to a fresh directory and renamed into place, so that two makes
# in the same tree (a test harness next to a developer) do not collide.
gen: $(GEN)/.stamp
$(GEN)/.stamp: $(REL)/hostfwdctl
	@set -e; tmp=$$(mktemp -d $(TARGET_DIR)/gen.XXXXXX); \
	mkdir -p $$tmp/man $$tmp/completions; \
	$(REL)/hostfwdctl generate man $$tmp/man >/dev/null; \
	for sh in bash zsh fish; do \
		$(REL)/hostfwdctl generate completions $$sh >$$tmp/completions/hostfwdctl.$$sh; \
	done; \
	mv $$tmp/completions/hostfwdctl.zsh $$tmp/completions/_hostfwdctl; \
	touch $$tmp/.stamp; chmod 0755 $$tmp; \
	old=$$(mktemp -d $(TARGET_DIR)/gen-old.XXXXXX); \
	if [ -d $(GEN) ]; then mv $(GEN) $$old/; fi; \
	mv $$tmp $(GEN); rm -rf $$old; \
	echo "generated man pages and completions in $(GEN)"

install: $(BINS) $(GEN)/.stamp
	$(INSTALL) -D -m 0755 $(REL)/hostfwd $(DESTDIR)$(SBINDIR)/hostfwd
	$(INSTALL) -D -m 0755 $(REL)/hostfwdctl $(DESTDIR)$(BINDIR)/hostfwdctl
	# systemd unit (ExecStart and docs follow SBINDIR/DOCDIR) and sysusers.d
	$(INSTALL) -d -m 0755 $(DESTDIR)$(SYSTEMDUNITDIR)
	sed -e 's|/usr/sbin/hostfwd|$(SBINDIR)/hostfwd|g' \
	    -e 's|/usr/share/doc/hostfwd|$(DOCDIR)|g' \
	    -e 's|/etc/hostfwd|$(SYSCONFDIR)/hostfwd|g' \
	    systemd/hostfwd.service >$(DESTDIR)$(SYSTEMDUNITDIR)/hostfwd.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/hostfwd.service
	$(INSTALL) -D -m 0644 systemd/hostfwd.sysusers $(DESTDIR)$(SYSUSERSDIR)/hostfwd.conf
	# D-Bus: bus policy, interfaces, activation
	$(INSTALL) -D -m 0644 dbus/org.hostfwd.Firewall1.conf $(DESTDIR)$(DBUSDIR)/system.d/org.hostfwd.Firewall1.conf
	$(INSTALL) -D -m 0644 dbus/org.hostfwd.Firewall1.Manager.xml $(DESTDIR)$(DBUSDIR)/interfaces/org.hostfwd.Firewall1.Manager.xml
	$(INSTALL) -D -m 0644 dbus/org.hostfwd.Firewall1.Link.xml $(DESTDIR)$(DBUSDIR)/interfaces/org.hostfwd.Firewall1.Link.xml
	$(INSTALL) -D -m 0644 dbus/org.hostfwd.Firewall1.service $(DESTDIR)$(DBUSDIR)/system-services/org.hostfwd.Firewall1.service
	# polkit: the actions; the group rule is only an example
	$(INSTALL) -D -m 0644 polkit/org.hostfwd.Firewall1.policy $(DESTDIR)$(POLKITDIR)/actions/org.hostfwd.Firewall1.policy
	$(INSTALL) -D -m 0644 polkit/50-hostfwd.rules $(DESTDIR)$(DOCDIR)/examples/50-hostfwd.rules
	# configuration: the documented default with audit = true; an existing
	# file on this system (no DESTDIR) is kept
	$(INSTALL) -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/hostfwd $(DESTDIR)$(SYSCONFDIR)/hostfwd/policies
	@if [ -z "$(DESTDIR)" ] && [ -e "$(CONF)" ]; then \
		echo "keeping $(CONF) (the new default is $(DOCDIR)/examples/hostfwd.toml)"; \
	else \
		{ printf '%s\n' \
		    '# $(SYSCONFDIR)/hostfwd/hostfwd.toml, read by hostfwd.service (hostfwd --config).' \
		    '# Every key is optional: one left out takes the built-in default' \
		    '# (`hostfwd default-config` prints it). Installed with audit = true:' \
		    '# nothing is dropped until you switch audit mode off (see' \
		    '# $(DOCDIR)/install.md). After editing: systemctl reload hostfwd.' \
		    '#'; \
		  sed -e 's/^audit *=.*/audit = true/' daemon/hostfwd.toml; } >$(CONF).tmp; \
		if ! grep -qx 'audit = true' $(CONF).tmp; then \
			rm -f $(CONF).tmp; echo "daemon/hostfwd.toml has no 'audit = ...' line" >&2; exit 1; \
		fi; \
		chmod 0644 $(CONF).tmp && mv $(CONF).tmp $(CONF) && echo "installed $(CONF) (audit = true)"; \
	fi
	# man pages
	$(INSTALL) -D -m 0644 docs/hostfwd.8 $(DESTDIR)$(MANDIR)/man8/hostfwd.8
	$(INSTALL) -d -m 0755 $(DESTDIR)$(MANDIR)/man1
	$(INSTALL) -m 0644 $(GEN)/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	# shell completions
	$(INSTALL) -D -m 0644 $(GEN)/completions/hostfwdctl.bash $(DESTDIR)$(BASHCOMPDIR)/hostfwdctl
	$(INSTALL) -D -m 0644 $(GEN)/completions/_hostfwdctl $(DESTDIR)$(ZSHCOMPDIR)/_hostfwdctl
	$(INSTALL) -D -m 0644 $(GEN)/completions/hostfwdctl.fish $(DESTDIR)$(FISHCOMPDIR)/hostfwdctl.fish
	# documentation
	$(INSTALL) -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	$(INSTALL) -D -m 0644 docs/install.md $(DESTDIR)$(DOCDIR)/install.md
	$(INSTALL) -D -m 0644 daemon/hostfwd.toml $(DESTDIR)$(DOCDIR)/examples/hostfwd.toml
	@if [ -z "$(DESTDIR)" ]; then \
		echo; \
		echo "Installed. Not enabled or started. Next steps:"; \
		echo "  systemd-sysusers hostfwd.conf     # group 'hostfwd' (for the example polkit rule)"; \
		echo "  systemctl daemon-reload && systemctl reload dbus"; \
		echo "  systemctl enable --now hostfwd    # starts in audit mode"; \
		echo "See $(DOCDIR)/install.md."; \
	fi

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/hostfwd $(DESTDIR)$(BINDIR)/hostfwdctl
	rm -f $(DESTDIR)$(SYSTEMDUNITDIR)/hostfwd.service $(DESTDIR)$(SYSUSERSDIR)/hostfwd.conf
	rm -f $(DESTDIR)$(DBUSDIR)/system.d/org.hostfwd.Firewall1.conf \
	      $(DESTDIR)$(DBUSDIR)/interfaces/org.hostfwd.Firewall1.Manager.xml \
	      $(DESTDIR)$(DBUSDIR)/interfaces/org.hostfwd.Firewall1.Link.xml \
	      $(DESTDIR)$(DBUSDIR)/system-services/org.hostfwd.Firewall1.service
	rm -f $(DESTDIR)$(POLKITDIR)/actions/org.hostfwd.Firewall1.policy
	rm -f $(DESTDIR)$(MANDIR)/man8/hostfwd.8 $(DESTDIR)$(MANDIR)/man1/hostfwdctl.1 $(DESTDIR)$(MANDIR)/man1/hostfwdctl-*.1
	rm -f $(DESTDIR)$(BASHCOMPDIR)/hostfwdctl $(DESTDIR)$(ZSHCOMPDIR)/_hostfwdctl $(DESTDIR)$(FISHCOMPDIR)/hostfwdctl.fish
	rm -rf $(DESTDIR)$(DOCDIR)
	@echo "kept $(DESTDIR)$(SYSCONFDIR)/hostfwd (configuration and policies) and /var/lib/hostfwd;"
	@echo "programs that are still attached stay until 'hostfwd detach' (run it before uninstalling) or a reboot"

# The .deb: stripped binaries, compressed man pages, maintainer scripts
# from packaging/debian/ (see the script for what each one does).
deb: all
	@set -e; mkdir -p $(DEB_DIR); \
	root=$$(mktemp -d $(abspath $(DEB_DIR))/root.XXXXXX); \
	trap 'rm -rf "$$root"' EXIT; \
	$(MAKE) --no-print-directory install DESTDIR=$$root \
		PREFIX=/usr SYSCONFDIR=/etc SYSTEMDUNITDIR=/usr/lib/systemd/system \
		SYSUSERSDIR=/usr/lib/sysusers.d DBUSDIR=/usr/share/dbus-1 POLKITDIR=/usr/share/polkit-1 >/dev/null; \
	packaging/debian/build-deb.sh $$root $(VERSION) $(DEB_ARCH) $(DEB).tmp.$$$$; \
	mv -f $(DEB).tmp.$$$$ $(DEB); \
	cp -f $(DEB) $(DEB_DIR)/hostfwd.deb.tmp.$$$$; mv -f $(DEB_DIR)/hostfwd.deb.tmp.$$$$ $(DEB_DIR)/hostfwd.deb; \
	echo "built $(DEB) (and $(DEB_DIR)/hostfwd.deb)"

clean-deb:
	rm -rf $(DEB_DIR)

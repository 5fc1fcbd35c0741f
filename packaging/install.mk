# packaging/install.mk -- wshubctl, make install, make uninstall, make deb (included by Makefile).
#
#   make install [PREFIX=/usr/local] [DESTDIR=]   binaries, config, unit, man pages, templates
#   make uninstall [PREFIX=...] [DESTDIR=]        removes them; a changed config is kept
#   make deb                                      $(BUILD)/wshub_<version>_<arch>.deb
#
# Layout (packaging/README.md explains the choices):
#   $(SBINDIR)      wshub, wshub-worker, wshub-admin, wshubctl -- all four side by side, because the
#                   hub starts the worker and the admin program from its own directory unless
#                   worker_binary/admin_binary say otherwise, so the installed config needs no path
#   $(SYSCONFDIR)   wshub/wshub.conf (never overwritten), logrotate.d/wshub,
#                   nginx/sites-available/wshub, apache2/conf-available/wshub.conf
#   $(UNITDIR)      wshub.service
#   $(DATADIR)      wshub.conf.example, the nginx and Apache templates with their render scripts,
#                   htdocs/ (the empty document root of the Apache site), clients/ when present
#   $(MANDIR)       wshub(8), wshubctl(8), wshub.conf(5)
# SYSCONFDIR stays /etc whatever PREFIX is: wshub reads /etc/wshub/wshub.conf by default.

PREFIX     ?= /usr/local
SBINDIR    ?= $(PREFIX)/sbin
DATADIR    ?= $(PREFIX)/share/wshub
MANDIR     ?= $(PREFIX)/share/man
DOCDIR     ?= $(PREFIX)/share/doc/wshub
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
INSTALL    ?= install

CTL_SRC  := $(wildcard tools/wshubctl/*.c)
CTL      := $(BUILD)/wshubctl
DIST     := $(BUILD)/dist
D        := $(DESTDIR)
VERSION  := $(shell sed -n 's/^\#define WSHUB_VERSION "\(.*\)"/\1/p' hub/hub.h)
# Apache files exist once the Apache front is in the tree (apache-conf/, scripts/render-apache.py).
HAVE_APACHE := $(wildcard apache-conf/wshub.conf.in scripts/render-apache.py)
# The JavaScript client, once it exists (clients/js/).
CLIENT_DIRS := $(wildcard clients/*)

.PHONY: install uninstall deb install-dist

all: $(CTL)

$(CTL): $(call obj,$(CTL_SRC)) $(BUILD)/libwshub.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_RT)

# wshub.conf(5) is generated from the documented example (packaging/man/conf2man.py).
$(DIST)/wshub.conf.5: conf/wshub.conf packaging/man/wshub.conf.5.in packaging/man/conf2man.py
	@mkdir -p $(@D)
	$(PYTHON) packaging/man/conf2man.py conf/wshub.conf packaging/man/wshub.conf.5.in > $@.tmp
	mv $@.tmp $@

# Files whose text depends on the install paths: regenerated on every install.
install-dist: $(DIST)/wshub.conf.5
	@mkdir -p $(DIST)
	sed -f packaging/wshub.conf.sed conf/wshub.conf | sed 's|@DATADIR@|$(DATADIR)|' \
	    > $(DIST)/wshub.conf
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	    -e 's|@UNITDIR@|$(UNITDIR)|g' packaging/wshub.service.in > $(DIST)/wshub.service
	sed -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' packaging/wshub.logrotate.in > $(DIST)/wshub.logrotate
	rm -rf $(DIST)/nginx && $(PYTHON) scripts/render-nginx.py --prefix $(DIST)/nginx \
	    --listen 80 --server-name localhost --wshub-conf $(DIST)/wshub.conf \
	    --access-log /var/log/nginx/wshub-access.log
	{ sed 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' packaging/nginx-site-header.in; \
	  cat $(DIST)/nginx/wshub.conf; } > $(DIST)/nginx-site
ifneq ($(HAVE_APACHE),)
	rm -rf $(DIST)/apache && $(PYTHON) scripts/render-apache.py --prefix $(DIST)/apache \
	    --listen '*:80' --server-name localhost --wshub-conf $(DIST)/wshub.conf
	{ sed 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' packaging/apache-conf-header.in; \
	  sed 's|$(abspath $(DIST))/apache/htdocs|$(DATADIR)/htdocs|g' $(DIST)/apache/wshub.conf; \
	} > $(DIST)/apache-conf
endif

install: $(BINS) $(CTL) install-dist
	$(INSTALL) -d $(D)$(SBINDIR) $(D)$(DATADIR)/scripts $(D)$(DATADIR)/nginx-conf \
	    $(D)$(MANDIR)/man5 $(D)$(MANDIR)/man8 $(D)$(UNITDIR) $(D)$(DOCDIR) \
	    $(D)$(SYSCONFDIR)/wshub $(D)$(SYSCONFDIR)/logrotate.d \
	    $(D)$(SYSCONFDIR)/nginx/sites-available
	$(INSTALL) -m 0755 $(BINS) $(CTL) $(D)$(SBINDIR)/
	@# The configuration is the operator's: an existing one is never replaced.
	if [ -e $(D)$(SYSCONFDIR)/wshub/wshub.conf ]; then \
	    echo "keeping the existing $(D)$(SYSCONFDIR)/wshub/wshub.conf"; \
	else \
	    $(INSTALL) -m 0640 $(DIST)/wshub.conf $(D)$(SYSCONFDIR)/wshub/wshub.conf; \
	    if [ -z "$(D)" ] && getent group wshub >/dev/null; then \
	        chgrp wshub $(SYSCONFDIR)/wshub/wshub.conf; fi; \
	fi
	if [ -e $(D)$(SYSCONFDIR)/nginx/sites-available/wshub ]; then \
	    echo "keeping the existing $(D)$(SYSCONFDIR)/nginx/sites-available/wshub"; \
	else \
	    $(INSTALL) -m 0644 $(DIST)/nginx-site $(D)$(SYSCONFDIR)/nginx/sites-available/wshub; \
	fi
	$(INSTALL) -m 0644 $(DIST)/wshub.logrotate $(D)$(SYSCONFDIR)/logrotate.d/wshub
	$(INSTALL) -m 0644 $(DIST)/wshub.service $(D)$(UNITDIR)/wshub.service
	$(INSTALL) -m 0644 conf/wshub.conf $(D)$(DATADIR)/wshub.conf.example
	$(INSTALL) -m 0644 nginx-conf/*.in $(D)$(DATADIR)/nginx-conf/
	$(INSTALL) -m 0755 scripts/render-nginx.py $(D)$(DATADIR)/scripts/
	$(INSTALL) -m 0644 packaging/man/wshub.8 packaging/man/wshubctl.8 $(D)$(MANDIR)/man8/
	$(INSTALL) -m 0644 $(DIST)/wshub.conf.5 $(D)$(MANDIR)/man5/
	$(INSTALL) -m 0644 README.md docs/design.md docs/upgrade.md docs/protocol.md \
		docs/security.md $(D)$(DOCDIR)/
	$(INSTALL) -m 0644 packaging/README.md $(D)$(DOCDIR)/README.packaging.md
ifneq ($(HAVE_APACHE),)
	$(INSTALL) -d $(D)$(DATADIR)/apache-conf $(D)$(DATADIR)/htdocs \
	    $(D)$(SYSCONFDIR)/apache2/conf-available
	$(INSTALL) -m 0644 apache-conf/*.in $(D)$(DATADIR)/apache-conf/
	$(INSTALL) -m 0755 scripts/render-apache.py $(D)$(DATADIR)/scripts/
	if [ -e $(D)$(SYSCONFDIR)/apache2/conf-available/wshub.conf ]; then \
	    echo "keeping the existing $(D)$(SYSCONFDIR)/apache2/conf-available/wshub.conf"; \
	else \
	    $(INSTALL) -m 0644 $(DIST)/apache-conf \
	        $(D)$(SYSCONFDIR)/apache2/conf-available/wshub.conf; \
	fi
endif
ifneq ($(CLIENT_DIRS),)
	$(INSTALL) -d $(D)$(DATADIR)/clients
	cp -R $(CLIENT_DIRS) $(D)$(DATADIR)/clients/
endif
	@echo "installed wshub $(VERSION) under $(D)$(PREFIX) (config in $(D)$(SYSCONFDIR)/wshub)"

# Removes what install put there. Files the operator may have changed (wshub.conf, the nginx
# site, the Apache conf) are removed only when they are still exactly as installed.
uninstall: install-dist
	rm -f $(addprefix $(D)$(SBINDIR)/,wshub wshub-worker wshub-admin wshubctl)
	rm -f $(D)$(UNITDIR)/wshub.service $(D)$(SYSCONFDIR)/logrotate.d/wshub
	rm -f $(D)$(MANDIR)/man8/wshub.8 $(D)$(MANDIR)/man8/wshubctl.8 $(D)$(MANDIR)/man5/wshub.conf.5
	rm -rf $(D)$(DATADIR) $(D)$(DOCDIR)
	for pair in wshub/wshub.conf:wshub.conf nginx/sites-available/wshub:nginx-site \
	            apache2/conf-available/wshub.conf:apache-conf; do \
	    f=$(D)$(SYSCONFDIR)/$${pair%%:*}; orig=$(DIST)/$${pair##*:}; \
	    if [ -e "$$f" ] && cmp -s "$$f" "$$orig"; then rm -f "$$f"; \
	    elif [ -e "$$f" ]; then echo "keeping $$f: it was changed"; fi; \
	done
	-rmdir $(D)$(SYSCONFDIR)/wshub 2>/dev/null

deb: $(BINS) $(CTL)
	rm -rf $(BUILD)/deb
	$(MAKE) --no-print-directory install DESTDIR=$(abspath $(BUILD))/deb/root PREFIX=/usr \
	    UNITDIR=/lib/systemd/system SYSCONFDIR=/etc
	packaging/debian/build-deb.sh $(abspath $(BUILD))/deb/root $(abspath $(BUILD)) $(VERSION)
	rm -rf $(BUILD)/deb

# wshub.conf.sed -- turns conf/wshub.conf (every option at its built-in default) into the
# /etc/wshub/wshub.conf that `make install` and the Debian package install.
#
# The installed file stays the documented example, so it can never miss an option or describe
# one differently; only the values a systemd installation needs differ, and the header says
# which. tests/test_install.py checks that each substitution took effect (wshub -T).

1a\
#\
# INSTALLED COPY. This file was installed by `make install` or the wshub Debian package. It is\
# conf/wshub.conf with two values changed for a system service run by systemd\
# (wshub.service, user wshub):\
#   admin_socket_group www-data        the web server (nginx, Apache) may use the admin socket\
#   pid_file /run/wshub/wshub.pid      for logrotate and scripts (systemd tracks the pid itself)\
# and log_file left empty: stderr goes to the journal (journalctl -u wshub); set it to\
# /var/log/wshub/wshub.log to log to a file instead.\
# It may hold admin_token: keep it readable by root and group wshub only (mode 0640).\
# The pristine example with every built-in default is @DATADIR@/wshub.conf.example.

s|^admin_socket_group ""$|admin_socket_group www-data|
s|^pid_file ""$|pid_file /run/wshub/wshub.pid|
/^log_file ""$/i\
# With the logrotate snippet installed (/etc/logrotate.d/wshub):\
#   log_file /var/log/wshub/wshub.log

sed -e 's|^kernel = .*|kernel = "pih/pih-bridge"|' -e 's|^vif = .*|vif = []|' /pih/pih-bridge.xl > /tmp/rel.xl
cd /
xl create /tmp/rel.xl && echo "FROM-ROOT: created" || echo "FROM-ROOT: failed"
xl list
xl destroy pih-bridge
cd /tmp
xl create /tmp/rel.xl && echo "FROM-TMP: created" || echo "FROM-TMP: failed"
cd /pih
sed -e 's|^kernel = .*|kernel = "../pih/pih-bridge"|' -e 's|^vif = .*|vif = []|' /pih/pih-bridge.xl > /tmp/rel2.xl
xl create /tmp/rel2.xl && echo "DOTDOT-FROM-PIH: created" || echo "DOTDOT-FROM-PIH: failed"
xl destroy pih-bridge
cd /pih; xl create pih-bridge.xl 'vif=[]' && echo "RELCFG: created" || echo "RELCFG: failed"
fail "dump please"

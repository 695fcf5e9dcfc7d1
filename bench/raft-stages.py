#!/usr/bin/env python3
"""Lines up the `berth_timing` stamps of a 3-member berth cluster (see raft::stamp) into a
per-stage latency breakdown of the first 10 s of writes (store-bench's 1-client level):

  RUST_LOG="warn,openraft=off,berth_timing=debug" target/release/store-bench \
      --concurrency 1 --failovers 0 --only berth 2> stamps.log
  bench/raft-stages.py stamps.log
"""
import sys, re, collections, statistics
rows=[]
for line in open(sys.argv[1] if len(sys.argv) > 1 else '/dev/stdin'):
    p=line.split()
    try: i=p.index('T')
    except ValueError: continue
    rows.append((int(p[i+1]),p[i+2],int(p[i+3]),int(p[i+4])))
rows.sort(key=lambda r:r[3])
t0=rows[0][3]
# phase c=1: first 10.5 s after first prop.enter
first=min(r[3] for r in rows if r[1]=='prop.enter')
end=first+10_000_000
ph=[r for r in rows if first<=r[3]<end]
pids=collections.Counter(r[0] for r in ph if r[1]=='prop.written')
print('leader candidates',pids)
leader=pids.most_common(1)[0][0]
enters=collections.Counter(r[0] for r in ph if r[1]=='prop.enter'); print('enter pids',enters)
# per index on leader
by=collections.defaultdict(dict)
for pid,st,idx,t in ph:
    role='L' if pid==leader else 'F%d'%pid
    key=(role,st)
    if idx:
        by[idx].setdefault(key,[]).append(t)
# commit.end carries last index of group; map
def d(a,b): return (b-a)
stats=collections.defaultdict(list)
idxs=sorted(i for i in by if ('L','prop.written') in by[i])
for i in idxs:
    e=by[i]
    w=e[('L','prop.written')][0]
    ap=e.get(('L','log.append'),[None])[0]
    ce=e.get(('L','log.commit.end'),[None])[0]
    if ap is None: continue
    if ce: stats['leader fsync (append->commit.end)'].append(ce-ap)
    ns=e.get(('L','net.ae.start'),[]); sd=e.get(('L','net.ae.send'),[]); rp=e.get(('L','net.ae.reply'),[])
    for a in ns: stats['append->net.ae.start'].append(a-ap)
    for a,b in zip(sd,rp): stats['ae send->reply (RTT incl follower)'].append(b-a)
    for k,v in e.items():
        if k[0].startswith('F') and k[1]=='svc.ae.recv':
            stats['send->follower recv'].append(v[0]-min(sd) if sd else 0)
            dn=e.get((k[0],'svc.ae.done'),[None])[0]
            if dn: stats['follower append_entries (recv->done)'].append(dn-v[0])
            fce=e.get((k[0],'log.commit.end'),[None])[0]
            fap=e.get((k[0],'log.append'),[None])[0]
            if fce and fap: stats['follower fsync'].append(fce-fap)
    sa=e.get(('L','sm.apply.start'),[None])[0]; sc=e.get(('L','sm.apply.committed'),[None])[0]
    if sa and rp: stats['first reply->sm.apply.start'].append(sa-min(rp))
    se=e.get(('L','sm.apply.end'),[None])[0]
    if sa and se: stats['sm apply (to results)'].append(se-sa)
    if sa and sc: stats['sm apply (to committed)'].append(sc-sa)
    if se: stats['sm.apply.end->prop.written'].append(w-se)
    stats['append->prop.written total'].append(w-ap)
for k,v in stats.items():
    v=sorted(v); print('%-40s n=%5d p50=%6d p90=%6d us'%(k,len(v),v[len(v)//2],v[int(len(v)*.9)]))
# proposer level: on leader pid: prop.enter->prop.write->prop.written->prop.reply sequences (c=1 serial)
seq=[r for r in ph if r[1].startswith('prop.')]
# enter on any pid; pair consecutive enter->reply per pid
open_={}
lat=collections.defaultdict(list)
for pid,st,idx,t in seq:
    if st=='prop.enter': open_[pid]=t
    elif st=='prop.reply' and pid in open_: lat[pid].append(t-open_.pop(pid))
for pid,v in lat.items():
    v.sort(); print('propose latency pid',pid,'leader' if pid==leader else '', 'n',len(v),'p50',v[len(v)//2])
# API level on the leader (c=1 is serial): api.enter->prop.enter->prop.reply->api.exit, and
# the gap from api.exit to the next api.enter (the response's way out, the client, the next
# request's way in)
api=collections.defaultdict(list); prev={}
for pid,s,idx,t in ph:
    if pid!=leader or s not in ('api.enter','prop.enter','prop.reply','api.exit'): continue
    for a,b in (('api.enter','prop.enter'),('prop.enter','prop.reply'),('prop.reply','api.exit'),('api.exit','api.enter')):
        if s==b and a in prev: api[a+'->'+b].append(t-prev[a])
    prev[s]=t
for k,v in api.items():
    v=sorted(v); print('%-40s n=%5d p50=%6d p90=%6d us'%(k,len(v),v[len(v)//2],v[int(len(v)*.9)]))
print('--- sub-stages on leader')
st=collections.defaultdict(list)
last={}
order=['sm.apply.start','sm.apply.durable','sm.apply.txn','sm.apply.locked','sm.apply.end','sm.apply.return','sm.apply.commit','sm.apply.committed']
for pid,s,idx,t in ph:
    if pid!=leader: continue
    if s in order:
        i=order.index(s)
        if i>0 and (order[i-1]) in last: st[order[i-1]+'->'+s].append(t-last[order[i-1]])
        last[s]=t
    if s=='log.read.start': last['rs']=t
    if s=='log.read.end' and 'rs' in last: st['log.read'].append(t-last['rs'])
    if s=='log.read.end': last['re']=t
    if s=='net.ae.start' and 're' in last: st['log.read.end->net.ae.start'].append(t-last['re'])
    if s=='net.ae.start': last['ns']=t
    if s=='net.ae.send' and 'ns' in last: st['ae.start->send(encode, durable wait)'].append(t-last['ns'])
    if s=='log.append': last['ap']=t
    if s=='log.read.start' and 'ap' in last: st['append->log.read.start'].append(t-last['ap'])
for k,v in st.items():
    v=sorted(v); print('%-40s n=%5d p50=%6d p90=%6d us'%(k,len(v),v[len(v)//2],v[int(len(v)*.9)]))

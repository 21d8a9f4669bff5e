#!/usr/bin/env python3
"""Writes a large, valid Rapport project for benchmarking `rapport check`.

    python3 bench/gen_project.py --flows 1000 --out /tmp/big   # about 100,000 lines

Each flow is about 100 lines and uses most of the language: header clauses, flow-wide
transitions, asks with every `expect` form, templates, variants, handoffs and timers.
Flows are spread over files of 10 flows each. Deterministic for a given --flows.
"""
import argparse
import os

YAML = """brand: Bench Shoes
vars: { brand: "Bench Shoes" }
channels: { whatsapp: { window: 24h }, instagram: { window: 24h }, messenger: { window: 24h }, sms: {} }
templates: { cart_reminder_v2: [product_name, cart_url], order_update_v1: [order_id] }
queues: [support, sales]
profile: { first_name: string, timezone: string }
rate_limit: { max: 5, per: 1h }
events:
  cart.abandoned: { product_name: string, cart_url: string }
  order.placed: { order_id: string, total: number }
"""

FLOW = '''# Generated flow {i}: qualification, offer and handoff.
# Started by its own event; marketing for every third flow.
flow f{i} {{
  title    "Generated flow {i}"
  purpose  {purpose}
  channels whatsapp, instagram, messenger
  start on event e{i}.started when event.total > {i} and channel != "sms"
  priority {i}
  expire after 3d
  rollout  5% -> 25% -> 100% every 24h
  halt when opt_out_rate > 2% or handoff_rate > 30% after 200 runs
  goal     order.placed within 7d
  on reply "agent", "human", "person" -> handoff
  on event order.placed -> converted

  # The menu.
  state start {{
    send "Hi {{first_name|there}}! Welcome to {{brand}}. Reply 1 for products, 2 for orders."
      or template order_update_v1 with order_id = "f{i}"
    on reply "1" -> category
    on reply "2" -> order
    on reply contains "price", "how much" -> category
    on reply intent pricing -> category
    after 24h -> done
  }}

  state category {{
    ask category "Which category: A) Footwear B) Outerwear?"
      expect choice {{ "A" = "footwear", "B" = "outerwear" }}
      retry 1 "Please reply A or B."
      then -> budget
      else -> handoff
  }}

  state budget {{
    ask budget "What's your budget?" expect number
      retry 2 "A number, please, like 120."
      then -> email
      else -> recommend
  }}

  state email {{
    ask email "Where can we send the picks?" expect email
      then -> recommend
  }}

  state recommend {{
    send one of {{
      a: "Our best {{category|shoes}} picks for {{budget|you}}: https://bench.example/{{category|all}}"
      b: "Picked for you: {{category|shoes}} around {{budget|your budget}}."
    }}
    tag "qualified"
    emit crm.lead with category = "{{category|none}}", flow = "f{i}"
    after 1h -> remind
    on reply any -> done
  }}

  state remind {{
    send "Still looking? {{first_name|Friend}}, reply 1 to see more."
      or template order_update_v1 with order_id = "{{order_id|none}}"
    after 24h -> done
  }}

  state order {{
    ask order_id "Please share your order number." expect /^\\d{{5,10}}$/
      retry 1 "Order numbers have 5 to 10 digits."
      then -> phone
      else -> handoff
  }}

  state handoff {{
    handoff support summary "{{first_name|Contact}} needs help: {{last_reply}}" sla 1h
    on agent released -> done
    on reply sentiment < -0.5 -> done
  }}

  state phone {{
    ask phone "What number can our team call you on?"
      expect phone
      retry 1 "That doesn't look like a phone number; try +40 712 345 678."
      then -> thanks
      else -> done
  }}

  state thanks {{
    send """
      Thanks, {{first_name|friend}}!
      Someone from {{brand}} will call {{phone}} within a day.
    """
    -> done
  }}

  # Converted runs are tagged for the CRM.
  state converted {{ tag "converted"  end }}
  state done {{
    set outcome = "done"
    end
  }}
}}

'''


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flows", type=int, default=1000)
    p.add_argument("--per-file", type=int, default=10)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    yaml = YAML + "".join(f"  e{i}.started: {{ total: number }}\n" for i in range(a.flows))
    with open(os.path.join(a.out, "rapport.yaml"), "w") as f:
        f.write(yaml)
    lines = yaml.count("\n")
    for start in range(0, a.flows, a.per_file):
        text = "".join(
            FLOW.format(i=i, purpose="marketing" if i % 3 == 0 else "transactional")
            for i in range(start, min(start + a.per_file, a.flows))
        )
        lines += text.count("\n")
        with open(os.path.join(a.out, f"flows_{start // a.per_file:04}.flow"), "w") as f:
            f.write(text)
    print(f"wrote {a.flows} flows, {lines} lines, to {a.out}")


if __name__ == "__main__":
    main()

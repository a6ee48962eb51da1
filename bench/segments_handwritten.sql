-- The example project's segments and features (campaigns/), written by hand
-- as one DuckDB query: the baseline bench/bench_segments.py holds the
-- compiled query to. Same semantics as docs/segments.md; placeholders in
-- braces are filled in by the benchmark ({now}: the evaluation instant in UTC,
-- {today}: its date in Moscow, {this_year}/{last_year}: 1 January there).
--
-- Written the way a DuckDB expert would for this retailer:
-- * one scan of orders and one of events, every figure a FILTERed aggregate;
-- * favourite category and main store by GROUP BY + arg_min/arg_max, no window;
-- * local calendar days as Unix time + 3 h (Moscow is UTC+3 all year since 2014);
-- * "did anything happen since the event" as the latest such row overall.
WITH orders_per_customer AS (
    SELECT
        customer_id,
        count(*) FILTER (WHERE status IN ('completed', 'returned', 'cancelled'))             AS orders_any_status,
        max(ts)                                                                              AS last_order_any_status,
        count(*) FILTER (WHERE status = 'completed')                                         AS orders,
        min(ts) FILTER (WHERE status = 'completed')                                          AS first_order,
        max(ts) FILTER (WHERE status = 'completed')                                          AS last_order,
        count(*) FILTER (WHERE status = 'completed' AND ts >= TIMESTAMPTZ '{now}' - INTERVAL 30 DAY)   AS orders_30d,
        count(*) FILTER (WHERE status = 'completed' AND ts >= TIMESTAMPTZ '{now}' - INTERVAL 60 DAY)   AS orders_60d,
        count(*) FILTER (WHERE status = 'completed' AND ts >= TIMESTAMPTZ '{now}' - INTERVAL 365 DAY)  AS orders_365d,
        sum(total) FILTER (WHERE status = 'completed' AND ts >= TIMESTAMPTZ '{now}' - INTERVAL 365 DAY) AS spent_365d,
        max(total) FILTER (WHERE status = 'completed' AND ts >= TIMESTAMPTZ '{now}' - INTERVAL 365 DAY) AS max_check_365d,
        count(*) FILTER (WHERE status = 'completed' AND ts >= TIMESTAMPTZ '{now}' - INTERVAL 1095 DAY) AS orders_3y,
        avg(total) FILTER (WHERE status = 'completed' AND ts >= TIMESTAMPTZ '{now}' - INTERVAL 1095 DAY) AS avg_check_3y,
        avg(items) FILTER (WHERE status = 'completed' AND ts >= TIMESTAMPTZ '{now}' - INTERVAL 1095 DAY) AS avg_items_3y,
        count(*) FILTER (WHERE status = 'completed' AND ts >= TIMESTAMPTZ '{this_year}')     AS orders_this_year,
        count(*) FILTER (WHERE status = 'completed' AND ts >= TIMESTAMPTZ '2026-12-07 00:00:00+03'
                                                   AND ts < TIMESTAMPTZ '2026-12-11 00:00:00+03') AS orders_mass_bonus,
        count(*) FILTER (WHERE status = 'completed' AND channel = 'offline'
                           AND ts >= TIMESTAMPTZ '{last_year}' AND ts < TIMESTAMPTZ '{this_year}'
                           AND ((epoch_us(ts) + 10800000000) // 86400000000 + 3) % 7 < 5)   AS weekday_store_orders_last_year,
        count(*) FILTER (WHERE status = 'completed' AND ts >= TIMESTAMPTZ '{now}' - INTERVAL 365 DAY
                           AND store_id IN (SELECT store_id FROM stores WHERE mall IN ('Aviapark', 'Mega Belaya Dacha'))) AS mall_orders_365d
    FROM orders
    WHERE ts <= TIMESTAMPTZ '{now}'
    GROUP BY customer_id
),
events_per_customer AS (
    SELECT
        customer_id,
        min(ts)                                                                  AS first_seen,
        max(ts) FILTER (WHERE type = 'cart_updated')                             AS last_cart,
        max(ts) FILTER (WHERE type = 'product_viewed')                           AS last_product_view,
        max(ts) FILTER (WHERE type = 'category_viewed')                          AS last_category_view,
        max(ts) FILTER (WHERE type IN ('cart_updated', 'product_viewed'))        AS last_cart_or_product_view,
        count(*) FILTER (WHERE type IN ('site_visit', 'app_opened') AND ts >= TIMESTAMPTZ '{now}' - INTERVAL 7 DAY) AS visits_7d,
        count(DISTINCT (epoch_us(ts) + 10800000000) // 86400000000) FILTER (WHERE type IN ('site_visit', 'app_opened')) AS visit_days
    FROM events
    WHERE ts <= TIMESTAMPTZ '{now}'
    GROUP BY customer_id
),
favourite_category AS (
    SELECT customer_id, arg_min(category, (-lines, -amount, category)) AS category
    FROM (
        SELECT o.customer_id, l.category, count(*) AS lines, coalesce(sum(l.qty * l.price), 0) AS amount
        FROM order_lines l JOIN orders o USING (order_id)
        WHERE o.status = 'completed' AND o.ts >= TIMESTAMPTZ '{now}' - INTERVAL 365 DAY AND o.ts <= TIMESTAMPTZ '{now}'
          AND l.category IS NOT NULL
        GROUP BY ALL
    )
    GROUP BY customer_id
),
main_store AS (
    SELECT customer_id, arg_max(store_id, (orders, last_order, -store_id)) AS store_id
    FROM (
        SELECT customer_id, store_id, count(*) AS orders, max(ts) AS last_order
        FROM orders
        WHERE status = 'completed' AND channel = 'offline' AND store_id IS NOT NULL
          AND ts >= TIMESTAMPTZ '{now}' - INTERVAL 365 DAY AND ts <= TIMESTAMPTZ '{now}'
        GROUP BY ALL
    )
    GROUP BY customer_id
),
consent AS (
    -- The latest row per channel decides; on a tie in time, revoked wins.
    SELECT customer_id, channel, arg_max(status = 'granted', (updated_at, status <> 'granted')) AS granted
    FROM consents
    WHERE updated_at <= TIMESTAMPTZ '{now}'
    GROUP BY ALL
),
consent_per_customer AS (
    SELECT customer_id,
        bool_or(granted) FILTER (WHERE channel = 'email')    AS email,
        bool_or(granted) FILTER (WHERE channel = 'sms')      AS sms,
        bool_or(granted) FILTER (WHERE channel = 'push')     AS push,
        bool_or(granted) FILTER (WHERE channel = 'web_push') AS web_push,
        bool_or(granted) FILTER (WHERE channel = 'whatsapp') AS whatsapp,
        bool_or(granted) FILTER (WHERE channel = 'telegram') AS telegram
    FROM consent
    GROUP BY customer_id
),
price_drop AS (
    -- A product put in the cart within 30 days whose price dropped within a
    -- day, and no order with it since it was (last) put in the cart.
    SELECT DISTINCT cart.customer_id
    FROM (
        SELECT customer_id, product_id, max(ts) AS carted_at
        FROM events
        WHERE type = 'cart_updated' AND ts >= TIMESTAMPTZ '{now}' - INTERVAL 30 DAY AND ts <= TIMESTAMPTZ '{now}'
        GROUP BY ALL
    ) cart
    SEMI JOIN (
        SELECT customer_id, product_id
        FROM events
        WHERE type = 'price_dropped' AND ts >= TIMESTAMPTZ '{now}' - INTERVAL 1 DAY AND ts <= TIMESTAMPTZ '{now}'
    ) dropped USING (customer_id, product_id)
    WHERE NOT EXISTS (
        SELECT 1 FROM orders o JOIN order_lines l USING (order_id)
        WHERE o.customer_id = cart.customer_id AND l.product_id = cart.product_id
          AND o.ts >= cart.carted_at AND o.ts <= TIMESTAMPTZ '{now}'
    )
),
facts AS (
    SELECT
        c.customer_id, c.birthday, c.loyalty_tier, c.email, c.phone, c.push_token, c.web_push_endpoint,
        coalesce(o.orders_any_status, 0) AS orders_any_status, o.last_order_any_status,
        coalesce(o.orders, 0) AS orders,
        (DATE '{today}' - DATE '1970-01-01') - (epoch_us(o.first_order) + 10800000000) // 86400000000 AS days_since_first_order,
        (DATE '{today}' - DATE '1970-01-01') - (epoch_us(o.last_order) + 10800000000) // 86400000000 AS days_since_last_order,
        coalesce(o.orders_30d, 0) AS orders_30d, coalesce(o.orders_60d, 0) AS orders_60d,
        coalesce(o.orders_365d, 0) AS orders_365d, coalesce(o.spent_365d, 0) AS spent_365d, o.max_check_365d,
        coalesce(o.orders_3y, 0) AS orders_3y, o.avg_check_3y, o.avg_items_3y,
        coalesce(o.orders_this_year, 0) AS orders_this_year, coalesce(o.orders_mass_bonus, 0) AS orders_mass_bonus,
        coalesce(o.weekday_store_orders_last_year, 0) AS weekday_store_orders_last_year,
        coalesce(o.mall_orders_365d, 0) AS mall_orders_365d,
        (DATE '{today}' - DATE '1970-01-01') - (epoch_us(e.first_seen) + 10800000000) // 86400000000 AS days_since_first_seen,
        e.last_cart, e.last_product_view, e.last_category_view, e.last_cart_or_product_view,
        coalesce(e.visits_7d, 0) AS visits_7d, coalesce(e.visit_days, 0) AS visit_days,
        f.category AS favourite_category,
        coalesce(s.store_id, c.home_store_id) AS main_store,
        coalesce(k.email, false) AND coalesce(c.email, '') <> ''                   AS reachable_email,
        coalesce(k.sms, false) AND coalesce(c.phone, '') <> ''                     AS reachable_sms,
        coalesce(k.push, false) AND coalesce(c.push_token, '') <> ''              AS reachable_push,
        coalesce(k.web_push, false) AND coalesce(c.web_push_endpoint, '') <> ''   AS reachable_web_push,
        coalesce(k.whatsapp, false) AND coalesce(c.phone, '') <> ''                AS reachable_whatsapp,
        coalesce(k.telegram, false) AND coalesce(c.phone, '') <> ''                AS reachable_telegram,
        p.customer_id IS NOT NULL AS price_drop_in_cart
    FROM customers c
    LEFT JOIN orders_per_customer o USING (customer_id)
    LEFT JOIN events_per_customer e USING (customer_id)
    LEFT JOIN favourite_category f USING (customer_id)
    LEFT JOIN main_store s USING (customer_id)
    LEFT JOIN consent_per_customer k USING (customer_id)
    LEFT JOIN price_drop p USING (customer_id)
),
population AS (
    -- Quantile edges (continuous, interpolated) over the customers each feature scores.
    SELECT
        quantile_cont(days_since_last_order, [0.2, 0.4, 0.6, 0.8]) FILTER (WHERE orders_365d > 0) AS r_edges,
        quantile_cont(orders_365d, [0.2, 0.4, 0.6, 0.8]) FILTER (WHERE orders_365d > 0)           AS f_edges,
        quantile_cont(spent_365d, [0.2, 0.4, 0.6, 0.8]) FILTER (WHERE orders_365d > 0)            AS m_edges,
        quantile_cont(avg_check_3y, [0.25, 0.75]) FILTER (WHERE avg_check_3y > 0)                AS check_fences,
        quantile_cont(avg_items_3y, [0.25, 0.75]) FILTER (WHERE avg_items_3y > 0)                AS items_fences,
        quantile_cont(orders_3y, [0.25, 0.75]) FILTER (WHERE orders_3y > 0)                      AS frequency_fences
    FROM facts
),
kept AS (
    -- Box-plot fences: Q1 - 1.5 IQR .. Q3 + 1.5 IQR.
    SELECT *,
        avg_check_3y > 0 AND avg_check_3y BETWEEN check_fences[1] - 1.5 * (check_fences[2] - check_fences[1])
                                              AND check_fences[2] + 1.5 * (check_fences[2] - check_fences[1]) AS check_kept,
        avg_items_3y > 0 AND avg_items_3y BETWEEN items_fences[1] - 1.5 * (items_fences[2] - items_fences[1])
                                              AND items_fences[2] + 1.5 * (items_fences[2] - items_fences[1]) AS items_kept,
        orders_3y > 0 AND orders_3y BETWEEN frequency_fences[1] - 1.5 * (frequency_fences[2] - frequency_fences[1])
                                        AND frequency_fences[2] + 1.5 * (frequency_fences[2] - frequency_fences[1]) AS frequency_kept
    FROM facts CROSS JOIN population
),
band_edges AS (
    SELECT
        quantile_cont(avg_check_3y, [0.25, 0.5, 0.75]) FILTER (WHERE check_kept) AS check_edges,
        quantile_cont(avg_items_3y, [0.25, 0.5, 0.75]) FILTER (WHERE items_kept) AS items_edges,
        quantile_cont(orders_3y, [0.25, 0.5, 0.75]) FILTER (WHERE frequency_kept) AS frequency_edges
    FROM kept
),
scored AS (
    SELECT *,
        -- Scores: how many edges lie strictly below the value (a value on an edge gets the lower score).
        CASE WHEN orders_365d > 0 THEN 5 - len(list_filter(r_edges, lambda x: x < days_since_last_order)) END AS r,
        CASE WHEN orders_365d > 0 THEN 1 + len(list_filter(f_edges, lambda x: x < orders_365d)) END AS f,
        CASE WHEN orders_365d > 0 THEN 1 + len(list_filter(m_edges, lambda x: x < spent_365d)) END AS m,
        CASE WHEN check_kept THEN ['below_q1', 'q1_median', 'median_q3', 'above_q3'][1 + len(list_filter(check_edges, lambda x: x < avg_check_3y))] END AS avg_check_band,
        CASE WHEN items_kept THEN ['below_q1', 'q1_median', 'median_q3', 'above_q3'][1 + len(list_filter(items_edges, lambda x: x < avg_items_3y))] END AS basket_depth_band,
        CASE WHEN frequency_kept THEN ['below_q1', 'q1_median', 'median_q3', 'above_q3'][1 + len(list_filter(frequency_edges, lambda x: x < orders_3y))] END AS frequency_band,
        -- Lifecycle: the customer's own purchase cycle (days between first and last purchase per gap).
        CASE WHEN orders >= 2 AND days_since_first_order > days_since_last_order
             THEN (days_since_first_order - days_since_last_order) / (orders - 1) ELSE 60 END AS cycle
    FROM kept CROSS JOIN band_edges
),
features AS (
    SELECT *,
        CASE WHEN orders_365d = 0 THEN NULL
             WHEN r >= 4 AND f >= 4 AND m >= 4 THEN 'champions'
             WHEN r >= 3 AND f >= 4 THEN 'loyal'
             WHEN m = 5 THEN 'big_spenders'
             WHEN r >= 4 AND f <= 2 THEN 'promising'
             WHEN r = 3 AND f IN (2, 3) THEN 'needs_attention'
             WHEN r <= 2 AND f >= 4 AND m >= 4 THEN 'cant_lose'
             WHEN r <= 2 AND f >= 3 THEN 'at_risk'
             WHEN r <= 2 AND f <= 2 THEN 'hibernating'
             ELSE 'others' END AS rfm,
        CASE WHEN orders = 0 THEN NULL
             WHEN days_since_first_order <= 30 THEN 'new'
             WHEN days_since_last_order > 4.0 * cycle THEN 'deep_churn'
             WHEN days_since_last_order > 2.5 * cycle THEN 'churn'
             WHEN days_since_last_order > 1.5 * cycle THEN 'pre_churn'
             ELSE 'active' END AS stage,
        last_cart >= TIMESTAMPTZ '{now}' - INTERVAL 3 DAY AND last_cart <= TIMESTAMPTZ '{now}' - INTERVAL 1 HOUR
            AND NOT coalesce(last_order_any_status >= last_cart, false) AS abandoned_cart
    FROM scored
)
SELECT
    customer_id,
    orders_any_status = 0 AS no_orders_yet,
    orders_any_status = 0 AND coalesce(days_since_first_seen <= 1, false) AS welcome,
    orders_any_status = 0 AND coalesce(days_since_first_seen BETWEEN 3 AND 30, false) AND visit_days >= 2 AS registered_no_order,
    orders = 1 AND coalesce(days_since_first_order <= 1, false) AS first_order,
    coalesce(month(birthday) * 100 + day(birthday) IN (
        SELECT month(d) * 100 + day(d) FROM range(DATE '{today}', DATE '{today}' + 8, INTERVAL 1 DAY) t(d)), false) AS birthday_soon,
    orders_365d >= 1 AS active_last_year,
    orders_mass_bonus >= 1 AS mass_bonus_earners,
    reachable_email, reachable_sms, reachable_push, reachable_web_push, reachable_whatsapp, reachable_telegram,
    reachable_email OR reachable_sms OR reachable_push OR reachable_web_push OR reachable_whatsapp OR reachable_telegram AS reachable_any,
    orders_365d >= 1 AND NOT (reachable_email OR reachable_sms OR reachable_push OR reachable_web_push OR reachable_whatsapp OR reachable_telegram) AS no_contact_retargeting,
    substr(md5('uyut_pilot:' || customer_id), 1, 8) < '1999999a' AS test_pilot_10pct,  -- 10% of 16^8
    coalesce(abandoned_cart, false) AS abandoned_cart,
    coalesce(last_product_view >= TIMESTAMPTZ '{now}' - INTERVAL 2 DAY AND last_product_view <= TIMESTAMPTZ '{now}' - INTERVAL 2 HOUR
             AND NOT coalesce(last_order_any_status >= last_product_view, false)
             AND NOT coalesce(last_cart >= last_product_view, false), false)
        AND NOT coalesce(abandoned_cart, false) AS abandoned_product_view,
    coalesce(last_category_view >= TIMESTAMPTZ '{now}' - INTERVAL 2 DAY AND last_category_view <= TIMESTAMPTZ '{now}' - INTERVAL 3 HOUR
             AND NOT coalesce(last_order_any_status >= last_category_view, false)
             AND NOT coalesce(last_cart_or_product_view >= last_category_view, false), false)
        AND NOT coalesce(abandoned_cart, false) AS abandoned_category_view,
    price_drop_in_cart,
    visits_7d >= 2 AND orders_30d = 0 AND NOT coalesce(abandoned_cart, false) AS visited_not_bought,
    coalesce(stage = 'new', false) AS new_customers,
    coalesce(stage IN ('new', 'active'), false) AS active,
    coalesce(stage = 'pre_churn', false) AS pre_churn,
    coalesce(stage = 'churn', false) AS churn,
    coalesce(stage = 'deep_churn', false) AS deep_churn,
    coalesce(stage IN ('pre_churn', 'churn', 'deep_churn') AND days_since_last_order <= 365, false) AS churning,
    coalesce(days_since_last_order > 365, false) AS inactive_over_a_year,
    orders_60d >= 1 AS bought_last_2_months,
    orders_this_year >= 1 AS bought_this_year,
    coalesce(stage = 'churn', false) AND substr(md5('discount_test_2026_11:' || customer_id), 1, 8) < '33333333' AS discount_test_sample,  -- 20%
    coalesce(rfm = 'champions', false) AS champions,
    coalesce(rfm IN ('champions', 'loyal'), false) AS loyal,
    coalesce(rfm IN ('at_risk', 'cant_lose'), false) AS at_risk,
    coalesce(rfm = 'hibernating', false) AS hibernating,
    coalesce(r = 5, false) AS top_recency,
    coalesce(loyalty_tier = 'gold', false) AS gold_tier,
    coalesce(avg_check_band = 'below_q1', false) AND orders_60d = 0 AS avg_check_below_q1,
    coalesce(avg_check_band = 'q1_median', false) AND orders_60d = 0 AS avg_check_q1_median,
    coalesce(avg_check_band = 'median_q3', false) AND orders_60d = 0 AS avg_check_median_q3,
    coalesce(avg_check_band = 'above_q3', false) AND orders_60d = 0 AS avg_check_above_q3,
    coalesce(basket_depth_band IN ('below_q1', 'q1_median'), false) AS shallow_baskets,
    coalesce(frequency_band = 'above_q3', false) AS frequent_buyers,
    coalesce(favourite_category = 'bedding', false) AS bedding_lovers,
    weekday_store_orders_last_year >= 2 AND orders_this_year = 1 AND coalesce(days_since_last_order > 180, false) AS weekday_offline_lapsed,
    mall_orders_365d >= 1 OR coalesce(main_store IN (12, 37), false) AS mall_customers,
    coalesce(max_check_365d > 5000, false) AS big_check_last_year
FROM features

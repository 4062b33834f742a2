//! The texts both parts embed, their token counts, and the padding each batch size
//! costs.

use fstore_flows::sentence::SentenceTransformer;

/// 64 English sentences of 8 to 40 words.
pub(crate) const SENTENCES: [&str; 64] = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Our quarterly revenue grew by twelve percent, driven mostly by strong subscription renewals in Europe and a recovering retail segment in North America.",
    "Please restart the router before calling support again.",
    "She walked into the quiet library, found an empty table by the window, and spent the whole afternoon reading about the history of early navigation instruments.",
    "Free shipping on all orders over fifty dollars this weekend only.",
    "The new firmware update fixes a memory leak that caused the camera to freeze after several hours of continuous recording.",
    "How do I change the default language of the mobile app?",
    "Scientists have discovered a species of deep-sea fish that produces its own light to attract prey in complete darkness.",
    "The meeting has been moved to Thursday at three in the afternoon.",
    "After the storm knocked out power across the valley, volunteers set up a temporary shelter in the high school gym and handed out blankets, water and hot meals to hundreds of families.",
    "This stainless steel water bottle keeps drinks cold for twenty-four hours.",
    "The committee rejected the proposal because the projected costs were too high.",
    "I ordered a medium pepperoni pizza but received a large vegetarian one instead.",
    "Machine learning models can inherit biases from the data they are trained on, which is why careful evaluation across different groups of users matters before deployment.",
    "The train to Edinburgh departs from platform nine every hour.",
    "Add two cups of flour, a pinch of salt and one teaspoon of baking powder, then whisk until smooth.",
    "Our hotel room had a beautiful view of the harbour and the old lighthouse.",
    "The defendant's lawyer argued that the evidence had been collected without a valid warrant and should therefore be excluded from the trial.",
    "Battery life is excellent, easily lasting two full days of normal use.",
    "Remote work has changed how teams communicate, with more written updates and fewer spontaneous conversations.",
    "The museum's new exhibit explores the art and daily life of ancient Mesopotamian cities.",
    "Customers who bought this lamp also purchased a matching set of linen shades.",
    "Heavy rain is expected tomorrow morning, so leave early and drive carefully.",
    "The startup raised forty million dollars to expand its battery recycling plants across three countries over the next two years.",
    "My package was marked as delivered, but it never arrived at my door.",
    "The orchestra opened the concert with a bold and energetic performance of a little-known symphony by a Czech composer.",
    "Regular exercise improves sleep quality, mood and long-term heart health.",
    "To reset your password, click the link in the email we just sent you.",
    "The bridge will be closed for maintenance every night between midnight and five.",
    "Despite a slow start, the home team rallied in the second half and won the championship with a last-minute goal from their youngest player.",
    "These running shoes are lightweight, breathable and surprisingly durable on rough trails.",
    "The city council approved a plan to plant ten thousand trees along major streets.",
    "Why does my laptop fan get so loud when I open a video call?",
    "Inflation slowed for the third consecutive month as energy prices fell and supply chains continued to recover from earlier disruptions.",
    "The novel follows two sisters who reconnect after decades apart and uncover a family secret hidden in their grandmother's letters.",
    "Turn left at the second traffic light and the pharmacy is on your right.",
    "The database migration failed halfway through because a foreign key constraint referenced a table that had already been dropped.",
    "Fresh basil, ripe tomatoes and good olive oil make the simplest summer salad.",
    "Astronomers observed a distant galaxy whose light left it more than thirteen billion years ago, shortly after the universe began.",
    "The warranty covers manufacturing defects for two years but not accidental damage.",
    "Kids under twelve get in free at the science center on Sundays.",
    "Our support team typically replies within one business day.",
    "The hiking trail climbs steeply through pine forest before opening onto a wide ridge with views of three lakes and the snowy peaks beyond.",
    "This coffee maker brews a full pot in under five minutes and shuts off automatically.",
    "The senator announced she would not seek re-election after serving four terms.",
    "Local farmers are struggling with an unusually dry spring that has delayed planting of corn and soybeans.",
    "Can I return an item bought online to one of your physical stores?",
    "The software engineer spent the entire week tracking down a race condition that only appeared under heavy load on machines with many cores.",
    "A gentle introduction to linear algebra for students with no prior background.",
    "The airline cancelled dozens of flights after a software outage grounded its fleet.",
    "Wireless earbuds with active noise cancellation and a compact charging case.",
    "The children built a sandcastle with towers, a moat and a tiny flag made from a leaf.",
    "Researchers found that people who spend time in green spaces report lower stress and better concentration, even after only twenty minutes outdoors.",
    "The restaurant's new chef brings a modern twist to traditional Basque cooking.",
    "Unemployment claims rose slightly last week, but economists say the labour market remains tight.",
    "Store the cheese wrapped in paper in the coldest part of the fridge.",
    "The documentary examines how plastic waste travels from city streets into rivers and finally reaches the open ocean, harming wildlife along the way.",
    "Please confirm your attendance by replying to this message before Friday.",
    "The volcano erupted early on Sunday, sending ash several kilometres into the sky.",
    "A well-designed API makes the common case easy and the rare case possible.",
    "He learned to play the violin at sixty and now performs with a community orchestra every spring.",
    "The apartment has two bedrooms, a small balcony and is close to public transport.",
    "Shares of the chip maker jumped after it reported record demand for data center processors and raised its forecast for the rest of the year.",
    "The garden is full of bees and butterflies from early May until late September.",
];

/// Tokens attention sees for each batch size, padding included, over the real tokens
/// (the dense layers see only real tokens: the flow packs them): the texts are cut into
/// the same batches as [`measure_flow`] cuts them, and each batch is padded to its
/// longest text, as one pass of `SentenceTransformer::run` pads it (these batches are
/// within its token budget, so each is one pass).
pub(crate) fn padding(lens: &[usize], sizes: &[usize]) -> Vec<f64> {
    let n = lens.len();
    sizes
        .iter()
        .map(|&b| {
            let (mut real, mut padded) = (0usize, 0usize);
            // n batches starting at multiples of b cover every start a run can see.
            for k in 0..n {
                let batch: Vec<usize> = (0..b).map(|j| lens[(k * b + j) % n]).collect();
                real += batch.iter().sum::<usize>();
                padded += b * batch.iter().copied().max().unwrap_or(0);
            }
            padded as f64 / real.max(1) as f64
        })
        .collect()
}

/// Tokens of each text, [CLS] and [SEP] included.
pub(crate) fn token_counts(
    flow: &SentenceTransformer,
    texts: &[&str],
) -> anyhow::Result<Vec<usize>> {
    texts
        .iter()
        .map(|t| flow.token_ids(t, 256).map(|ids| ids.len()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("tokenizing: {}", e.message()))
}

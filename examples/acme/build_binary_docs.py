#!/usr/bin/env python3
"""Build the PDF and DOCX documents of the Acme Robotics sample corpus.

The text of every binary document lives in this file (the DOCUMENTS table
below), so the corpus can be regenerated and the QA gold passages can be
checked against the source text. Run with the project virtualenv:

    .venv/bin/python examples/acme/build_binary_docs.py

The output is deterministic: PDFs are written with reportlab's invariant
mode and DOCX files get fixed core properties and fixed zip timestamps, so
running the script twice produces byte-identical files.

Block types used in a document body:
    ("h1", text) ("h2", text) ("h3", text)  headings
    ("meta", text)                          small italic line under the title
    ("p", text)                             paragraph
    ("bullets", [text, ...])                bulleted list
    ("table", [[header...], [row...], ...]) table, first row is the header
"""

from __future__ import annotations

import datetime as _dt
import io
import sys
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
DOCS = HERE / "docs"

# --------------------------------------------------------------------------
# Document content
# --------------------------------------------------------------------------

EXPENSE_POLICY = [
    ("h1", "Acme Robotics Expense Policy"),
    ("meta", "Policy FIN-02, version 6.0. Effective 1 January 2026. Owner: Julien Roux, Head of Travel and Expenses. Approved by Daniel Okafor, Chief Financial Officer."),
    ("h2", "1. Purpose and scope"),
    ("p", "This policy explains which business expenses Acme Robotics reimburses, how to claim them and who approves them. It applies to all employees, interns and contractors with an Acme email address in Lyon, Austin and Pune. Booking rules for flights, trains, hotels and rental cars are set out in the separate Travel Policy; this policy covers what happens once money has been spent."),
    ("p", "Amounts in this policy are given in euros. Where a limit is given only in euros, employees in Austin and Pune should apply the equivalent amount in US dollars or Indian rupees at the monthly rate published in Spendly."),
    ("h2", "2. General principles"),
    ("bullets", [
        "Spend company money as carefully as if it were your own.",
        "Only genuine, necessary business expenses are reimbursed.",
        "You may not approve your own expenses, or the expenses of your own manager.",
        "Expenses that break this policy will be rejected, even if they were approved by mistake.",
        "The Finance team audits a random sample of 10% of all expense reports every month.",
    ]),
    ("h2", "3. How do I submit an expense claim?"),
    ("p", "All expenses are claimed in Spendly, at expenses.acme.example or through the Spendly mobile app. Create one report per business trip, or one report per month for recurring local expenses. Attach a photo or PDF of each receipt to the matching expense line and choose the correct expense category and cost centre."),
    ("p", "Expense claims must be submitted in Spendly within 30 days of the date the expense was incurred. Claims submitted more than 90 days after the expense date will not be reimbursed unless the Chief Financial Officer grants an exception. At the end of the financial year (31 December), all outstanding expenses must be submitted by 10 January."),
    ("h2", "4. When do I need a receipt?"),
    ("p", "An itemised receipt is required for every expense of EUR 25 or more (USD 25 in Austin and INR 2,000 in Pune). Credit card slips alone are not enough: the receipt must show what was bought. For hotel stays, the itemised hotel invoice is required whatever the amount. A digital copy uploaded to Spendly is the legal record, so you do not need to keep or post the paper original."),
    ("p", "If you lose a receipt, complete a missing receipt declaration in Spendly. You may use no more than 2 missing receipt declarations per calendar quarter, and each one may cover at most EUR 100. Repeated missing receipts are reported to your department director."),
    ("h2", "5. Who approves my expenses?"),
    ("p", "Every expense report is routed automatically in Spendly according to its total amount:"),
    ("table", [
        ["Total of the expense report", "Approver"],
        ["Up to EUR 2,500", "Your line manager"],
        ["EUR 2,500.01 to EUR 10,000", "Your line manager, then your department director"],
        ["Above EUR 10,000", "Line manager, department director, then the Chief Financial Officer"],
    ]),
    ("p", "Line managers may approve expense reports of up to EUR 2,500. Reports above EUR 2,500 also need the department director, and reports above EUR 10,000 also need the Chief Financial Officer. Approvers have 5 working days to act on a report; after that Spendly sends a reminder to the approver and their manager."),
    ("p", "Pre-approval is required for any single expense above EUR 1,000 that is not booked through TravelHub, for example a conference fee, a training course or an equipment purchase. Request pre-approval in Spendly before you commit to the expense, and attach the approval to your claim."),
    ("h2", "6. Meals, lodging and per diems while travelling"),
    ("p", "When you travel on business with at least one overnight stay, your meals are covered by a daily meal allowance (per diem) instead of by receipts. The daily rates for each city are published in the per diem rate table (per-diem-rates.csv) on the Finance intranet. You claim the per diem in Spendly by entering the trip dates and destination; Spendly calculates the amount."),
    ("p", "On the day you leave and the day you return, you receive 75% of the daily meal allowance. If a meal is provided free of charge, for example by a conference or a customer, reduce the claim by 20% for a breakfast, 40% for a lunch and 40% for a dinner."),
    ("p", "Example: a two-night trip from Lyon to Paris with no meals provided gives 75% of EUR 65 on the departure day, EUR 65 for the full day and 75% of EUR 65 on the return day, a total meal allowance of EUR 162.50."),
    ("p", "Lodging is reimbursed at actual cost, with an itemised invoice, up to the lodging cap per night for the city. If no hotel within the cap is available, ask the travel desk (travel@acme.example) to approve a higher rate before you book. The daily incidentals allowance covers tips, laundry, local phone calls and other small costs; no receipts are needed for incidentals."),
    ("p", "Day trips without an overnight stay do not qualify for a per diem. Instead, you may claim the actual cost of one meal, up to EUR 25, with a receipt, if the trip takes you more than 50 km from your office."),
    ("h2", "7. Client entertainment"),
    ("p", "Client entertainment must have a clear business purpose. The limit is EUR 90 per person, including drinks, tax and tip. Record the names and companies of all attendees on the expense line. The most senior Acme employee present pays and claims the expense. Alcohol is reimbursed only as part of client entertainment and never when only Acme employees are present."),
    ("h2", "8. Mileage and local transport"),
    ("p", "If you use your private vehicle for business with your manager's agreement, mileage is reimbursed at EUR 0.45 per km in France, USD 0.70 per mile in the United States and INR 12 per km in India. Commuting between home and your usual office is never reimbursed. Parking and tolls are reimbursed with receipts."),
    ("p", "Taxis and ride-hailing services may be used when public transport is impractical, when carrying equipment, or when travelling between 21:00 and 06:00. Choose the standard vehicle category."),
    ("h2", "9. Corporate card"),
    ("p", "Employees who travel more than four times a year can apply for an Acme corporate Visa card in Spendly once they have completed their probation period. The card is for business expenses only. Card transactions must be matched with receipts in Spendly by the 5th working day of the following month; cards with unmatched transactions older than 60 days are suspended. Cash withdrawals with the card are limited to EUR 200 per week and are allowed only in countries where cards are not widely accepted."),
    ("h2", "10. What is not reimbursed?"),
    ("bullets", [
        "Traffic fines, parking fines and speeding tickets.",
        "Minibar items, in-room films and hotel room upgrades.",
        "Flight, train or hotel upgrades paid for personally.",
        "Personal grooming, clothing and toiletries.",
        "Expenses of spouses, partners or family members travelling with you.",
        "Loss or theft of personal belongings, which is handled by the travel insurance.",
        "Alcohol outside client entertainment.",
    ]),
    ("h2", "11. When will I be reimbursed?"),
    ("p", "Approved expenses are reimbursed by bank transfer within 10 working days of final approval. You can follow the status of each report in Spendly. If a payment has not arrived after 10 working days, contact the expenses team."),
    ("h2", "12. Misuse"),
    ("p", "Submitting false or inflated claims is fraud. It will lead to disciplinary action, which can include dismissal, and Acme may recover any amounts paid. If you are unsure whether an expense is allowed, ask before you spend."),
    ("h2", "13. Contacts"),
    ("p", "Questions about this policy: expenses@acme.example or internal extension 3100. Spendly support: the help button in Spendly or the IT Service Desk on extension 4357. Policy owner: Julien Roux, Head of Travel and Expenses."),
]

CODE_OF_CONDUCT = [
    ("h1", "Acme Robotics Code of Conduct"),
    ("meta", "Version 3.2, approved by the Executive Committee on 2 December 2025. Owner: Sophie Marchand, Chief People Officer, and Isabelle Roche, General Counsel."),
    ("h2", "A message from our CEO"),
    ("p", "Our robots earn trust because they behave predictably and safely. The same should be true of us. This Code sets out how we treat each other, our customers and our partners. Read it, ask questions about it, and speak up when something does not look right. Claire Fontaine, Chief Executive Officer."),
    ("h2", "Who must follow this Code?"),
    ("p", "The Code applies to every employee, intern and director of Acme Robotics in every office, and to contractors and temporary staff while they work for us. Managers have an extra responsibility: they must set an example and make sure their teams know where to raise concerns."),
    ("h2", "Respect and inclusion"),
    ("p", "We treat everyone with dignity. Harassment, bullying and discrimination based on sex, gender identity, sexual orientation, ethnicity, religion, age, disability, pregnancy, family status or any other protected characteristic are not tolerated, at work, at company events, on customer sites or online. Jokes, nicknames or messages that demean people are harassment even if they were meant as banter."),
    ("h2", "Health and safety"),
    ("p", "Safety comes first, especially around moving robots. Follow the lab and warehouse safety rules, wear the required protective equipment and never disable a safety function on an Acme Sorter 3, even for testing, without a written permit from the Lab Safety Officer. Report any accident or near miss on the same day through the safety form on the intranet."),
    ("h2", "Can I accept a gift from a supplier or customer?"),
    ("p", "You may accept gifts and hospitality with a value of up to EUR 50 (or the local equivalent) per giver per calendar year, provided they are not given in return for a business decision. Any gift or invitation above EUR 50 must be declared in the Gifts Register at ethics.acme.example within 5 working days, and will usually have to be returned or donated. Never accept cash, vouchers or gift cards, whatever the amount. During a tender or contract negotiation, do not accept any gift or hospitality from the companies involved."),
    ("p", "The same limits apply to gifts we give. Gifts to public officials, including employees of state-owned logistics companies, require prior approval from the Legal team."),
    ("h2", "Anti-bribery and corruption"),
    ("p", "We never offer, promise or pay a bribe, and we never ask for or accept one. This includes facilitation payments, which are small payments to speed up routine government actions such as customs clearance. Facilitation payments are forbidden in every country, even where they are common practice. The only exception is a payment made under threat to your personal safety, which must be reported to the Legal team within 24 hours."),
    ("h2", "Conflicts of interest"),
    ("p", "A conflict of interest exists when your personal interests could influence, or appear to influence, your decisions at work, for example a family member working for a supplier, or an investment in a competitor. You must declare any actual or potential conflict of interest in PeopleHub within 30 days of becoming aware of it. Taking a second job or a paid board seat requires prior written approval from your manager and the People team."),
    ("h2", "Protecting information"),
    ("p", "Treat confidential information, including customer data from FleetView, product roadmaps and personal data about colleagues, according to the Acceptable Use Policy and the data protection rules. Do not trade shares of customers or suppliers on the basis of confidential information you learn at Acme."),
    ("h2", "Speaking for Acme"),
    ("p", "Only authorised spokespeople may speak to journalists or analysts on behalf of Acme. Forward all press enquiries to press@acme.example. On social media you may say where you work, but make clear that your opinions are your own and never share confidential information or customer names."),
    ("h2", "How do I report a concern?"),
    ("p", "If you see or suspect a breach of this Code, speak up. You can talk to your manager, your HR business partner or the Legal team. You can also use the ClearVoice ethics line, which is run by an independent provider and is available 24 hours a day in English, French and Hindi: online at ethics.acme.example, by phone on 0 800 90 40 40 in France, 1 888 555 0199 in the United States and 000 800 555 0199 in India. Reports to the ethics line can be made anonymously."),
    ("p", "All reports are taken seriously and handled confidentially by a small team. You will receive an acknowledgement within 7 days."),
    ("h2", "No retaliation"),
    ("p", "Acme does not tolerate retaliation against anyone who raises a concern in good faith or who helps with an investigation, even if the concern turns out to be unfounded. Retaliation is itself a serious breach of this Code."),
    ("h2", "Training and acknowledgement"),
    ("p", "New employees must complete the Code of Conduct e-learning on learn.acme.example within 30 days of their start date. All employees must complete the annual refresher and acknowledge the Code by 31 March each year."),
    ("h2", "Consequences"),
    ("p", "Breaches of this Code may lead to disciplinary action up to and including dismissal, in line with local law and, in Lyon, the company rules (reglement interieur)."),
]

ACCEPTABLE_USE = [
    ("h1", "Acceptable Use Policy for IT Systems"),
    ("meta", "Policy SEC-01, version 5.0. Effective 1 February 2026. Owner: Nadia Belkacem, Chief Information Security Officer. Questions: security@acme.example."),
    ("h2", "Why this policy exists"),
    ("p", "Acme Robotics' laptops, accounts, networks and cloud services give us access to customer data, robot firmware and designs that competitors would like to have. This policy sets out what you may and may not do with Acme IT systems. It applies to every employee and contractor, on any device used for Acme work."),
    ("h2", "Can I use my work laptop for personal things?"),
    ("p", "Limited personal use of Acme devices and internet access is allowed, for example reading the news or checking your personal bank account at lunchtime, as long as it does not interfere with your work, cost Acme money or break any law or Acme policy. Personal files stored on Acme devices are not backed up and may be deleted when the device is reassigned. Family members and friends must not use Acme devices."),
    ("h2", "Software and apps"),
    ("p", "Only install software from the Acme Software Center (Company Portal on Windows, Self Service on macOS). If you need a tool that is not in the catalogue, request it through help.acme.example; the Security team reviews new software within 10 working days. Browser extensions are limited to those on the approved list. Pirated or unlicensed software is never allowed."),
    ("h2", "Can I use ChatGPT or other AI tools?"),
    ("p", "Only generative AI tools listed on the approved AI tools page at ai.acme.example may be used for Acme work. You must never paste confidential information, customer data, source code or personal data into an AI tool that is not on the approved list. Output from AI tools must be reviewed by a person before it is sent to a customer or used in a product."),
    ("h2", "Email, files and cloud storage"),
    ("p", "Store work files in Acme OneDrive, SharePoint or GitLab only. Personal cloud storage such as Dropbox, Google Drive or iCloud, and file transfer services such as WeTransfer, are blocked on Acme devices and must not be used for Acme data. Automatic forwarding of Acme email to a personal email account is prohibited. To share large files with customers, use a SharePoint external sharing link, which expires after 30 days by default."),
    ("h2", "Removable media"),
    ("p", "USB storage devices are blocked on Acme laptops, with the exception of encrypted Kingston IronKey drives issued by IT. Never plug in a USB device that you found or were given at a trade fair."),
    ("h2", "Networks"),
    ("p", "In Acme offices, connect Acme laptops to the Acme-Corp wireless network, which uses certificate authentication. Visitors and personal phones use the Acme-Guest network, which is isolated from internal systems. Do not connect personal devices, home routers or network equipment to office network ports. Outside the office, use the Acme Connect VPN to reach internal systems."),
    ("h2", "Monitoring and privacy"),
    ("p", "To protect Acme and its customers, the Security team monitors Acme systems for malware, data leaks and unusual activity. Monitoring is carried out in line with GDPR, local law and, in France, after consultation with the CSE. The content of personal messages is not read except as part of a formal investigation authorised by the General Counsel."),
    ("h2", "Prohibited activities"),
    ("bullets", [
        "Sharing your password, MFA device or YubiKey with anyone, including IT staff.",
        "Trying to bypass security controls such as disk encryption, the VPN, endpoint protection or web filtering.",
        "Accessing, downloading or sharing illegal, violent or sexually explicit material.",
        "Running cryptocurrency mining, port scanning or penetration testing without written approval from the Security team.",
        "Using Acme systems to run a personal business or for political campaigning.",
    ]),
    ("h2", "Consequences"),
    ("p", "Breaking this policy can lead to removal of access and disciplinary action, up to and including dismissal. Report suspected breaches or security incidents immediately to the security hotline on extension 7000 or to security@acme.example."),
]

INVESTIGATIONS = [
    ("h1", "Employee Relations Investigations Procedure"),
    ("meta", "CONFIDENTIAL - HR group only. Procedure HR-ER-05, version 2.1, effective 1 March 2026. Owners: Sophie Marchand, Chief People Officer, and Isabelle Roche, General Counsel."),
    ("h2", "Purpose"),
    ("p", "This procedure tells the People team how to handle complaints and allegations that may require a formal investigation: harassment, discrimination, retaliation, fraud, serious breaches of the Code of Conduct and serious misconduct. It is not shared with employees outside the HR group; employees are told only that concerns are handled promptly, fairly and confidentially."),
    ("h2", "Intake and case numbers"),
    ("p", "Every concern received by an HR business partner, a manager, the Legal team or the ClearVoice ethics line must be logged as a case in the ER case tracker within 2 working days of receipt. Case numbers use the format ER-YYYY-NNN, for example ER-2026-014. All case documents are stored in the restricted ER-Cases SharePoint library; never store them in email folders, personal OneDrive or Slack."),
    ("h2", "Triage"),
    ("p", "The Investigation Panel (the Chief People Officer, the General Counsel and the HR business partner for the site) meets within 5 working days of intake to decide whether a formal investigation is needed, who will investigate, and whether interim measures are required. If the allegation concerns a member of the Panel, that person is replaced by the CEO's nominee."),
    ("h2", "Who investigates?"),
    ("p", "Most investigations are led by a trained HR business partner from a different site than the people involved. Allegations against a Vice President or a member of the Executive Committee, and any allegation of sexual harassment in Lyon, are investigated by the external law firm Cabinet Vasseur et Associes. Fraud allegations are investigated jointly with Internal Audit."),
    ("h2", "How long should an investigation take?"),
    ("p", "The target is to complete each investigation within 30 calendar days of the Panel's triage decision. If an investigation will take longer, the investigator must tell the complainant and the person accused in writing and give a new expected date. Investigations lasting more than 60 calendar days are escalated to the Chief People Officer."),
    ("h2", "Interim measures"),
    ("p", "The Panel may separate the people involved, change reporting lines, or grant paid leave. A precautionary suspension on full pay requires written approval from the Chief People Officer and must be reviewed every 10 working days. A suspension is not a disciplinary sanction and must not be described as one."),
    ("h2", "Interviews"),
    ("bullets", [
        "Give the interviewee at least 2 working days' notice, except where evidence may be destroyed.",
        "Employees may be accompanied by a colleague or, in Lyon, by a CSE representative.",
        "Two people attend every interview: the investigator and a note-taker.",
        "The interviewee reviews and signs the interview notes within 5 working days.",
        "Do not record interviews on video or audio without the written consent of everyone present.",
    ]),
    ("h2", "Findings and outcome"),
    ("p", "The investigator writes a report setting out the facts, the evidence and a finding of substantiated, not substantiated or inconclusive for each allegation, applying the balance of probabilities. The report does not recommend a sanction. The Panel decides on next steps, and any disciplinary process follows the separate Disciplinary Procedure. The complainant and the person accused are told the outcome in writing, without sharing the full report."),
    ("h2", "Current caseload"),
    ("p", "As of 1 September 2026 there are 4 open investigations: 2 in Lyon, 1 in Austin and 1 in Pune. Case status is reviewed at the monthly Panel meeting on the first Monday of each month."),
    ("h2", "Retention"),
    ("p", "Case files are kept for 5 years after the case is closed and then deleted by the People Operations team, unless a legal hold applies."),
]

PARENTAL_LEAVE = [
    ("h1", "Parental Leave Policy"),
    ("meta", "Owner: People Team. Effective 1 January 2026. Applies to all employees in Lyon, Austin and Pune."),
    ("p", "Acme Robotics wants every parent to have time to bond with a new child without worrying about money. This policy sets a global minimum for paid parental leave that applies in all our offices. Where local law gives more generous leave, the local law applies instead."),
    ("h2", "Who is eligible?"),
    ("p", "All permanent and fixed-term employees are eligible from their first day of employment; there is no minimum length of service. The policy covers birth, adoption of a child under 18 and surrogacy, and applies equally to parents of any gender and to same-sex couples."),
    ("h2", "How long is parental leave at Acme?"),
    ("p", "The birthing parent, or the primary carer in an adoption or surrogacy, receives 20 weeks of parental leave at 100% of base salary. The non-birthing parent, or the secondary carer, receives 8 weeks of parental leave at 100% of base salary. Acme pays the difference between any statutory payments and your full base salary."),
    ("p", "The table below shows the total paid leave in each office after combining statutory leave with the Acme top-up."),
    ("table", [
        ["Office", "Birthing parent / primary carer", "Non-birthing parent / secondary carer", "Statutory basis"],
        ["Lyon", "20 weeks at full pay", "8 weeks at full pay", "French maternity leave (16 weeks) and paternity leave (28 days), topped up by Acme"],
        ["Austin", "20 weeks at full pay", "8 weeks at full pay", "FMLA job protection (12 weeks unpaid), paid in full by Acme"],
        ["Pune", "26 weeks at full pay", "8 weeks at full pay", "Maternity Benefit Act (26 weeks), non-birthing leave paid by Acme"],
    ]),
    ("p", "In Pune, the birthing parent receives 26 weeks at full pay because the Maternity Benefit Act is more generous than the Acme minimum."),
    ("h2", "When can I take the leave?"),
    ("p", "The birthing parent's leave may start up to 6 weeks before the expected due date. The non-birthing parent's 8 weeks can be taken in one block or in up to 2 blocks of at least 2 weeks each, at any time within 12 months of the birth or adoption. Leave that is not taken within 12 months is lost."),
    ("h2", "When do I need to tell my manager?"),
    ("p", "Please tell your manager and submit the Parental Leave Request form in PeopleHub at least 12 weeks before the expected due date. For adoption, submit the form as soon as the placement date is confirmed. Your HR business partner will then confirm your leave dates and pay in writing within 10 working days."),
    ("h2", "What happens to my pay and benefits?"),
    ("p", "Your base salary, pension contributions, health insurance and other benefits continue during paid parental leave. You continue to accrue annual leave. If you are eligible for a bonus, it is not reduced because of parental leave. Salary increases decided while you are on leave apply to you from the same date as everyone else."),
    ("h2", "Can I return part-time?"),
    ("p", "Yes. After parental leave of 8 weeks or more, you can use a phased return: for up to 4 weeks you work 60% of your normal hours while receiving your full salary. Agree the schedule with your manager before your leave ends. If you would like to work part-time on a longer-term basis, you can make a flexible working request in PeopleHub; managers must respond within 30 days."),
    ("h2", "Keeping in touch"),
    ("p", "You can work up to 10 paid keeping-in-touch days during parental leave, for example to attend training or a team offsite. Keeping-in-touch days are voluntary, and they do not end or extend your leave."),
    ("h2", "Pregnancy, fertility and adoption appointments"),
    ("p", "Employees may take paid time off to attend antenatal, fertility treatment and adoption appointments, and partners may attend up to 3 such appointments. Record these as \"Medical appointment\" in PeopleHub."),
    ("h2", "Childcare support in Lyon"),
    ("p", "Acme reserves 6 places at the Les Petits Pas creche at 9 Rue Smith, a 5-minute walk from the Lyon office. Places are allocated each June for the following September; apply through the People team."),
    ("h2", "Questions"),
    ("p", "Contact your HR business partner or the People team at people@acme.example (extension 2200)."),
]

TRAVEL_POLICY = [
    ("h1", "Business Travel Policy"),
    ("meta", "Policy FIN-03, version 5.2. Effective 1 January 2026. Owner: Julien Roux, Head of Travel and Expenses. Travel desk: travel@acme.example, extension 3300."),
    ("p", "This policy explains how to book business travel at Acme Robotics, which class of travel you may use, and how you are protected while you are away. It works together with the Expense Policy, which covers meal allowances and reimbursement, and with the per diem rate table, which sets the nightly hotel caps for each city."),
    ("h2", "Do I need approval before I travel?"),
    ("p", "Every business trip must be approved by your line manager in TravelHub before anything is booked. Intercontinental trips, for example Lyon to Austin or Austin to Pune, also need approval from your department director. Trips to countries rated high-risk by the Security team additionally need approval from the Chief Information Security Officer, Nadia Belkacem, at least 10 working days before departure."),
    ("h2", "How do I book a trip?"),
    ("p", "All flights, trains, hotels and rental cars must be booked through TravelHub at trips.acme.example, which is operated by our travel agency Voyages Horizon. Bookings made outside TravelHub are not reimbursed unless TravelHub could not offer the service. Booking through TravelHub also means we know where you are if something goes wrong."),
    ("p", "Book flights at least 14 days before departure for trips within Europe, the United States or India, and at least 21 days before departure for intercontinental trips. Late bookings are allowed for urgent customer issues, but the reason must be entered in TravelHub."),
    ("p", "If you need help, call the travel desk on extension 3300 during office hours. Outside office hours, the Voyages Horizon 24/7 emergency line is +33 4 72 40 88 88."),
    ("h2", "Which class of travel can I book?"),
    ("p", "The class of travel depends on the scheduled duration of the flight or train journey, not on your seniority:"),
    ("table", [
        ["Mode", "Journey duration", "Class allowed"],
        ["Flight", "Up to 6 hours", "Economy"],
        ["Flight", "More than 6 hours and up to 9 hours", "Premium economy"],
        ["Flight", "More than 9 hours", "Business class, with department director approval"],
        ["Train", "Up to 3 hours", "Second class (standard)"],
        ["Train", "More than 3 hours", "First class"],
    ]),
    ("p", "Business class is allowed only for flights with a scheduled duration of more than 9 hours, and must be approved by your department director in TravelHub. For example, the direct flight from Paris to Austin qualifies, but a flight from Lyon to London does not."),
    ("p", "For journeys between Lyon and Paris, you must take the TGV rather than fly. Upgrades paid for with your own money or loyalty points are allowed, but Acme does not reimburse them."),
    ("h2", "Hotels"),
    ("p", "Hotels must stay within the nightly lodging cap for the city in the per diem rate table. TravelHub shows preferred hotels with negotiated rates first. If nothing within the cap is available, ask the travel desk to approve a higher rate before booking. Airbnb and other private rentals are not allowed for stays of fewer than 7 nights."),
    ("h2", "Rental cars"),
    ("p", "Book the compact category unless you are carrying equipment or travelling with three or more colleagues. Insurance is included in TravelHub bookings, so decline the extra insurance at the rental desk. Return the car with a full tank to avoid refuelling charges."),
    ("h2", "Am I insured when I travel?"),
    ("p", "Yes. All employees on business travel are covered by Acme's group travel insurance with Meridian Assurance, policy number ACME-TRV-2026-0442. You do not need to buy any travel insurance yourself. The policy covers:"),
    ("bullets", [
        "Emergency medical expenses up to EUR 5,000,000, including hospitalisation.",
        "Medical repatriation and emergency evacuation.",
        "Trip cancellation or interruption for covered reasons up to EUR 10,000.",
        "Lost, stolen or delayed baggage up to EUR 2,500.",
        "Personal liability up to EUR 1,000,000.",
    ]),
    ("p", "In an emergency, call the Meridian Assurance 24/7 assistance line on +33 1 55 55 42 42 and quote the policy number. Keep the digital insurance card from the Meridian app or the Finance intranet on your phone."),
    ("p", "The insurance also covers up to 7 days of personal travel added directly before or after a business trip. Family members travelling with you are not covered by the Acme policy."),
    ("h2", "Combining business and leisure"),
    ("p", "You may extend a business trip with annual leave, provided the extension does not increase the fare paid by Acme. Any additional hotel nights and meals during the personal part of the trip are at your own expense."),
    ("h2", "Loyalty programmes"),
    ("p", "You may keep frequent flyer miles and hotel points earned on business travel, but loyalty membership must never influence which airline or hotel you book."),
    ("h2", "Visas and vaccinations"),
    ("p", "Visa fees, passport fast-track fees needed for a trip, and required vaccinations are reimbursed through Spendly. Start visa applications for India and the United States at least 6 weeks before travel; the travel desk can help with invitation letters."),
]

LAYOFF_PLAN = [
    ("h1", "Workforce Plan 2027 - Project Northstar"),
    ("meta", "STRICTLY CONFIDENTIAL - HR group only. Draft 3, prepared by Sophie Marchand, Chief People Officer, for the Executive Committee meeting of 14 October 2026. Do not discuss Project Northstar outside the named working group."),
    ("h2", "Summary"),
    ("p", "Sales of the legacy Acme Sorter 2 end in December 2026 and FleetView support is being automated. Project Northstar is the plan to reshape the organisation for 2027. The plan eliminates 38 roles across the three offices, about 9% of our 412 employees, and creates 12 new roles in robotics software and customer success. Affected employees will be offered the new roles first where their skills match."),
    ("h2", "Which roles are affected?"),
    ("table", [
        ["Site", "Function", "Roles eliminated", "New roles created"],
        ["Lyon", "Sorter 2 assembly and test", "17", "4"],
        ["Austin", "FleetView tier-1 support", "15", "5"],
        ["Pune", "Manual QA and documentation", "6", "3"],
        ["Total", "", "38", "12"],
    ]),
    ("h2", "What is the timeline?"),
    ("bullets", [
        "14 October 2026: Executive Committee decision on the final plan.",
        "1 December 2026: Board of Directors approval.",
        "12 January 2027: announcement to all employees, followed by individual meetings the same week.",
        "19 January 2027: start of information and consultation with the CSE in Lyon.",
        "31 March 2027: target date for the end of consultation in Lyon.",
        "30 June 2027: last working day for most affected employees.",
    ]),
    ("p", "The plan will be announced to employees on 12 January 2027. Until then, only the working group (CEO, CFO, Chief People Officer, General Counsel and the three HR business partners) may know about it."),
    ("h2", "How will the process work in each country?"),
    ("h3", "Lyon"),
    ("p", "Because more than 10 redundancies are planned within 30 days in a company with more than 50 employees, French law requires an employment protection plan (PSE) and consultation of the CSE. The PSE will include internal redeployment, a voluntary departure window of 4 weeks, outplacement support and training budgets."),
    ("h3", "Austin"),
    ("p", "Fewer than 50 employees are affected at the Austin site, so the federal WARN Act does not apply; affected employees will nevertheless receive 60 days' notice."),
    ("h3", "Pune"),
    ("p", "Affected employees will receive notice in line with their contracts and the Industrial Disputes Act where applicable."),
    ("h2", "What severance will be offered?"),
    ("table", [
        ["Site", "Severance package"],
        ["Lyon", "Statutory severance plus 3 months' gross salary supra-legal payment"],
        ["Austin", "2 weeks of base pay per year of service, minimum 8 weeks, plus 3 months of COBRA premiums"],
        ["Pune", "3 months' notice pay plus 15 days' salary per completed year of service"],
    ]),
    ("p", "All affected employees will receive 6 months of outplacement support from an external provider and keep their laptop after it has been wiped by IT."),
    ("h2", "What does it cost?"),
    ("p", "The total one-off restructuring cost of Project Northstar is estimated at EUR 4.2 million, of which EUR 2.9 million is severance and PSE measures in Lyon. The expected annual saving from 2028 is EUR 3.6 million."),
    ("h2", "Communication rules"),
    ("p", "Documents about Project Northstar are stored only in the HR-Confidential SharePoint library. Do not use the project name in calendar invitations or Slack; use \"Q1 planning\" instead. Questions go to Sophie Marchand."),
]

# name -> (relative output path, title, classification footer, body)
DOCUMENTS = {
    "finance/expense-policy.pdf": ("Acme Robotics Expense Policy", "Internal - all employees", EXPENSE_POLICY),
    "hr/code-of-conduct.pdf": ("Acme Robotics Code of Conduct", "Internal - all employees", CODE_OF_CONDUCT),
    "it/acceptable-use-policy.pdf": ("Acceptable Use Policy for IT Systems", "Internal - all employees", ACCEPTABLE_USE),
    "hr/confidential/investigations-procedure.pdf": ("Employee Relations Investigations Procedure", "CONFIDENTIAL - HR only", INVESTIGATIONS),
    "hr/parental-leave-policy.docx": ("Parental Leave Policy", "Internal - all employees", PARENTAL_LEAVE),
    "finance/travel-policy.docx": ("Business Travel Policy", "Internal - all employees", TRAVEL_POLICY),
    "hr/confidential/layoff-plan-2027.docx": ("Workforce Plan 2027 - Project Northstar", "STRICTLY CONFIDENTIAL - HR only", LAYOFF_PLAN),
}

FIXED_DATE = _dt.datetime(2026, 1, 5, 9, 0, 0)


def plain_text(body) -> str:
    """The document text as a plain string (used to check QA gold passages)."""
    parts = []
    for kind, content in body:
        if kind == "bullets":
            parts.extend(content)
        elif kind == "table":
            parts.extend(" ".join(row) for row in content)
        else:
            parts.append(content)
    return "\n".join(parts)


# --------------------------------------------------------------------------
# PDF rendering (reportlab)
# --------------------------------------------------------------------------

def build_pdf(path: Path, title: str, footer: str, body) -> int:
    from reportlab import rl_config

    rl_config.invariant = 1
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import cm
    from reportlab.platypus import (ListFlowable, ListItem, Paragraph,
                                    SimpleDocTemplate, Spacer, Table,
                                    TableStyle)

    styles = getSampleStyleSheet()
    base = ParagraphStyle("Body", parent=styles["BodyText"], fontName="Helvetica",
                          fontSize=11, leading=15, spaceAfter=7)
    meta = ParagraphStyle("Meta", parent=base, fontName="Helvetica-Oblique",
                          fontSize=9.5, leading=13, textColor=colors.HexColor("#444444"),
                          spaceAfter=12)
    h1 = ParagraphStyle("H1", parent=styles["Heading1"], fontName="Helvetica-Bold",
                        fontSize=20, leading=24, spaceAfter=8, textColor=colors.HexColor("#0b3d91"))
    h2 = ParagraphStyle("H2", parent=styles["Heading2"], fontName="Helvetica-Bold",
                        fontSize=14, leading=18, spaceBefore=10, spaceAfter=5,
                        textColor=colors.HexColor("#0b3d91"))
    h3 = ParagraphStyle("H3", parent=styles["Heading3"], fontName="Helvetica-Bold",
                        fontSize=12, leading=15, spaceBefore=6, spaceAfter=3)
    cell = ParagraphStyle("Cell", parent=base, fontSize=10, leading=13, spaceAfter=0)
    cell_head = ParagraphStyle("CellHead", parent=cell, fontName="Helvetica-Bold")

    def draw_page(canvas, doc):
        canvas.saveState()
        canvas.setFont("Helvetica", 8.5)
        canvas.setFillColor(colors.HexColor("#666666"))
        canvas.drawString(2.2 * cm, 1.3 * cm, f"Acme Robotics - {title} - {footer}")
        canvas.drawRightString(A4[0] - 2.2 * cm, 1.3 * cm, f"Page {doc.page}")
        canvas.restoreState()

    doc = SimpleDocTemplate(
        str(path), pagesize=A4, title=title, author="Acme Robotics",
        subject=footer, creator="examples/acme/build_binary_docs.py",
        leftMargin=2.2 * cm, rightMargin=2.2 * cm, topMargin=2.2 * cm,
        bottomMargin=2.2 * cm, invariant=1, allowSplitting=0,
    )
    story = []
    usable = A4[0] - 4.4 * cm
    for kind, content in body:
        if kind == "h1":
            story.append(Paragraph(escape(content), h1))
        elif kind == "h2":
            story.append(Paragraph(escape(content), h2))
        elif kind == "h3":
            story.append(Paragraph(escape(content), h3))
        elif kind == "meta":
            story.append(Paragraph(escape(content), meta))
        elif kind == "p":
            story.append(Paragraph(escape(content), base))
        elif kind == "bullets":
            story.append(ListFlowable(
                [ListItem(Paragraph(escape(t), base), leftIndent=14) for t in content],
                bulletType="bullet", start="-", leftIndent=14,
            ))
            story.append(Spacer(1, 4))
        elif kind == "table":
            ncols = len(content[0])
            rows = [[Paragraph(escape(c), cell_head if i == 0 else cell) for c in row]
                    for i, row in enumerate(content)]
            table = Table(rows, colWidths=[usable / ncols] * ncols, repeatRows=1)
            table.setStyle(TableStyle([
                ("GRID", (0, 0), (-1, -1), 0.5, colors.HexColor("#999999")),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde6f5")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 4),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 4),
            ]))
            story.append(table)
            story.append(Spacer(1, 8))
        else:
            raise ValueError(kind)
    doc.build(story, onFirstPage=draw_page, onLaterPages=draw_page)
    return doc.page


# --------------------------------------------------------------------------
# DOCX rendering (python-docx)
# --------------------------------------------------------------------------

def _normalise_zip(data: bytes) -> bytes:
    """Rewrite a zip with fixed timestamps so the bytes are reproducible."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            new = zipfile.ZipInfo(info.filename, date_time=(2026, 1, 5, 9, 0, 0))
            new.compress_type = zipfile.ZIP_DEFLATED
            new.external_attr = 0o644 << 16
            dst.writestr(new, src.read(info.filename))
    return out.getvalue()


def build_docx(path: Path, title: str, footer: str, body) -> None:
    from docx import Document
    from docx.shared import Pt

    document = Document()
    props = document.core_properties
    props.title = title
    props.author = "Acme Robotics"
    props.last_modified_by = "Acme Robotics"
    props.subject = footer
    props.created = FIXED_DATE
    props.modified = FIXED_DATE
    props.last_printed = FIXED_DATE
    props.revision = 1

    section = document.sections[0]
    section.footer.paragraphs[0].text = f"Acme Robotics - {title} - {footer}"

    for kind, content in body:
        if kind == "h1":
            document.add_heading(content, level=1)
        elif kind == "h2":
            document.add_heading(content, level=2)
        elif kind == "h3":
            document.add_heading(content, level=3)
        elif kind == "meta":
            para = document.add_paragraph()
            run = para.add_run(content)
            run.italic = True
            run.font.size = Pt(9)
        elif kind == "p":
            document.add_paragraph(content)
        elif kind == "bullets":
            for item in content:
                document.add_paragraph(item, style="List Bullet")
        elif kind == "table":
            table = document.add_table(rows=len(content), cols=len(content[0]))
            table.style = "Table Grid"
            for r, row in enumerate(content):
                for c, value in enumerate(row):
                    cell = table.cell(r, c)
                    cell.text = value
                    if r == 0:
                        for run in cell.paragraphs[0].runs:
                            run.bold = True
            document.add_paragraph()
        else:
            raise ValueError(kind)

    buf = io.BytesIO()
    document.save(buf)
    path.write_bytes(_normalise_zip(buf.getvalue()))


def main() -> int:
    for rel, (title, footer, body) in DOCUMENTS.items():
        out = DOCS / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        words = len(plain_text(body).split())
        if rel.endswith(".pdf"):
            pages = build_pdf(out, title, footer, body)
            print(f"{rel}: {pages} page(s), {words} words")
        else:
            build_docx(out, title, footer, body)
            print(f"{rel}: {words} words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
